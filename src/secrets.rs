//! Secret values (server keys, access keys, the admin token) and their safe fingerprints. A
//! secret's value never reaches `Debug`, a log line or JSON; only its fingerprint does.

use std::fmt;

use sha2::{Digest, Sha256};

/// A secret read from the environment. Its value never reaches `Debug`, logs or JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
}

impl Secret {
    pub fn new(value: String) -> Self {
        Self { value }
    }
    pub fn expose(&self) -> &str {
        &self.value
    }
    /// First 12 hex digits of the SHA-256 of the value: safe to show, stable across restarts.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.value.as_bytes())
    }
}

/// First 12 hex digits of the SHA-256 of `secret`.
pub fn fingerprint(secret: &[u8]) -> String {
    let digest = Sha256::digest(secret);
    hex::encode(&digest[..6])
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.fingerprint())
    }
}
