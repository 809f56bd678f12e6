//! A setting that must never be shown: JWT secret, admin token, authorizer token, a Redis
//! URL (it may carry a password). `Debug` and `Display` print `***`; the value is read only
//! through [`Secret::expose`], where it is used.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// For clap: any string is a secret.
impl FromStr for Secret {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Infallible> {
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shown() {
        let secret: Secret = "hunter2".parse().unwrap();
        assert_eq!(
            format!("{secret:?} {secret} {:?}", Some(&secret)),
            "Secret(***) *** Some(Secret(***))"
        );
        assert_eq!(secret.expose(), "hunter2");
    }
}
