//! The targets an environment can run on; each is a provider crate that expands a
//! [`crate::Topology`] into its own resources.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an environment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Local,
    Kubernetes,
    Aws,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Local => "local",
            Target::Kubernetes => "kubernetes",
            Target::Aws => "aws",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(Target::Local),
            "kubernetes" | "k8s" => Ok(Target::Kubernetes),
            "aws" => Ok(Target::Aws),
            other => Err(format!("unknown target `{other}`; choose local, kubernetes or aws")),
        }
    }
}
