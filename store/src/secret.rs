//! argon2id hashing and verification of passwords and update secrets.
//!
//! Each hash costs ~20 ms of CPU and 19 MiB (RESEARCH.md), so every call
//! runs on tokio's blocking pool; this module must never hash on an async
//! worker thread, and never log or return the secret it was given.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::error::StoreError;

/// Hashes `secret` with argon2id (default parameters, random salt) into a
/// PHC string.
pub(crate) async fn hash(secret: String) -> Result<String, StoreError> {
    tokio::task::spawn_blocking(move || hash_blocking(&secret))
        .await
        .map_err(|e| StoreError::Internal(format!("hashing task failed: {e}")))?
}

fn hash_blocking(secret: &str) -> Result<String, StoreError> {
    Argon2::default()
        .hash_password(secret.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Internal(format!("argon2 hashing failed: {e}")))
}

/// Checks `secret` against a stored PHC string. With `None` (unknown user or
/// host, or an account without password) it verifies against a dummy hash
/// and returns false, so the answer takes as long as for a wrong password
/// and does not reveal which names exist.
pub(crate) async fn verify(secret: String, stored: Option<String>) -> Result<bool, StoreError> {
    tokio::task::spawn_blocking(move || {
        let (stored, real) = match stored {
            Some(stored) => (stored, true),
            None => (dummy_hash()?.to_owned(), false),
        };
        let parsed = PasswordHash::new(&stored)
            .map_err(|e| StoreError::Internal(format!("stored hash is not a PHC string: {e}")))?;
        let ok = Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok();
        Ok(ok && real)
    })
    .await
    .map_err(|e| StoreError::Internal(format!("verification task failed: {e}")))?
}

fn dummy_hash() -> Result<&'static str, StoreError> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let hash = hash_blocking("ddserver dummy secret")?;
    Ok(DUMMY.get_or_init(|| hash))
}

/// A host's stored secret hash (argon2id PHC string), handed to the updater
/// so it can verify on its own bounded pool of blocking threads and key its
/// cache of verified credentials on it. Never shown: `Debug` is redacted and
/// there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSecret(pub(crate) String);

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredSecret(<redacted>)")
    }
}

impl StoredSecret {
    /// Wraps a PHC string (as stored); verification of a string that is not
    /// an argon2 PHC string always fails.
    pub fn from_phc(phc: String) -> StoredSecret {
        StoredSecret(phc)
    }

    /// Checks `secret` against this hash. Blocking (~20 ms of CPU, 19 MiB):
    /// call it from a blocking thread only.
    pub fn verify_blocking(&self, secret: &str) -> bool {
        PasswordHash::new(&self.0)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(secret.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    }

    /// Spends the same time as [`StoredSecret::verify_blocking`] and returns
    /// false: for unknown hosts, so that a wrong name and a wrong secret
    /// cannot be told apart by timing. Blocking.
    pub fn verify_nothing_blocking(secret: &str) -> bool {
        if let Ok(dummy) = dummy_hash() {
            let _ = StoredSecret(dummy.to_owned()).verify_blocking(secret);
        }
        false
    }

    /// The hash's bytes, only to be fed into a keyed hash (the updater's
    /// credential cache key), so that changing the secret changes the key.
    pub fn key_material(&self) -> &[u8] {
        self.0.as_bytes()
    }
}
