//! What a SQL or Prometheus probe's value must be: `== 1`, `< 0.01`, `>= 2`, or a bare
//! value meaning equality. Parsed at load so a typo fails validation, not the run.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    pub cmp: Cmp,
    pub value: Operand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Number(f64),
    Text(String),
}

impl Expect {
    pub fn parse(text: &str) -> Result<Expect, String> {
        let t = text.trim();
        let ops = [("==", Cmp::Eq), ("!=", Cmp::Ne), ("<=", Cmp::Le), (">=", Cmp::Ge), ("<", Cmp::Lt), (">", Cmp::Gt)];
        let (cmp, rest) = ops.iter().find_map(|(p, c)| t.strip_prefix(p).map(|rest| (*c, rest.trim()))).unwrap_or((Cmp::Eq, t));
        if rest.is_empty() {
            return Err(format!("`{text}` has no value to compare with; write it like `== 1` or `< 0.01`"));
        }
        let value = match rest.parse::<f64>() {
            Ok(n) if n.is_finite() => Operand::Number(n),
            _ if matches!(cmp, Cmp::Eq | Cmp::Ne) => Operand::Text(rest.to_string()),
            _ => return Err(format!("`{text}` compares order with `{rest}`, which is not a number")),
        };
        Ok(Expect { cmp, value })
    }

    /// Whether an observed value (as text, the way psql and Prometheus return it) meets
    /// the expectation. A number compared with a non-number never holds.
    pub fn holds(&self, observed: &str) -> bool {
        let observed = observed.trim();
        match &self.value {
            Operand::Text(want) => (observed == want) == (self.cmp == Cmp::Eq),
            Operand::Number(want) => {
                let Ok(got) = observed.parse::<f64>() else { return false };
                match self.cmp {
                    Cmp::Eq => got == *want,
                    Cmp::Ne => got != *want,
                    Cmp::Lt => got < *want,
                    Cmp::Le => got <= *want,
                    Cmp::Gt => got > *want,
                    Cmp::Ge => got >= *want,
                }
            }
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.cmp {
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        };
        match &self.value {
            Operand::Number(n) => write!(f, "{op} {n}"),
            Operand::Text(t) => write!(f, "{op} {t}"),
        }
    }
}

scalectl_core::text_value!(Expect, "Expect", "A comparison such as `== 1`, `< 0.01` or `>= 2`.", read = Expect::parse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_parse_and_hold() {
        assert!(Expect::parse("< 0.01").unwrap().holds("0.002"));
        assert!(!Expect::parse("< 0.01").unwrap().holds("0.5"));
        assert!(Expect::parse("1").unwrap().holds(" 1 "));
        assert!(Expect::parse(">= 2").unwrap().holds("2"));
        assert!(Expect::parse("== streaming").unwrap().holds("streaming"));
        assert!(Expect::parse("!= off").unwrap().holds("on"));
        assert!(!Expect::parse("> 0").unwrap().holds("NaN?"), "a non-number never meets a numeric bound");
        assert!(Expect::parse("< many").unwrap_err().contains("not a number"));
        assert!(Expect::parse(">=").unwrap_err().contains("no value"));
    }
}
