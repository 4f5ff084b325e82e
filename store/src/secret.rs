//! argon2id hashing and verification of passwords and update secrets.
//!
//! Each hash costs ~20 ms of CPU and 19 MiB (RESEARCH.md), so every call
//! runs on tokio's blocking pool; this module must never hash on an async
//! worker thread, and never log or return the secret it was given.

use std::sync::OnceLock;

use argon2::password_hash::phc::{Output, PasswordHash};
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Block, Params, Version};

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

/// Working memory for argon2 verifications (19 MiB at the default
/// parameters), for a thread that verifies many secrets one after another:
/// reused, the memory is not allocated, faulted in page by page and given
/// back to the system for every verification. Empty until first used;
/// [`VerifyMemory::release`] gives it back.
#[derive(Default)]
pub struct VerifyMemory(Vec<Block>);

impl std::fmt::Debug for VerifyMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("VerifyMemory").field(&self.bytes()).finish()
    }
}

impl VerifyMemory {
    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.0.len() * Block::SIZE
    }

    /// Gives the memory back (the next verification allocates it again).
    pub fn release(&mut self) {
        self.0 = Vec::new();
    }
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
        self.verify_blocking_in(secret, &mut VerifyMemory::default())
    }

    /// [`StoredSecret::verify_blocking`] in `memory`, which keeps its size
    /// afterwards for the next verification. What the argon2 crate's
    /// `verify_password` does (the hash's own algorithm, version and
    /// parameters; a constant-time comparison of the outputs), but with
    /// memory the caller keeps.
    pub fn verify_blocking_in(&self, secret: &str, memory: &mut VerifyMemory) -> bool {
        let Ok(parsed) = PasswordHash::new(&self.0) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
            return false;
        };
        let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else {
            return false;
        };
        let Ok(version) = parsed.version.map(Version::try_from).transpose() else {
            return false;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        let blocks = params.block_count();
        let argon2 = Argon2::new(algorithm, version.unwrap_or_default(), params);
        // Every block is written before it is read, so old contents are
        // never seen: only the length matters.
        memory.0.resize(blocks, Block::default());
        let mut buffer = [0u8; Output::MAX_LENGTH];
        let Some(out) = buffer.get_mut(..expected.len()) else {
            return false;
        };
        if argon2
            .hash_password_into_with_memory(secret.as_bytes(), salt, out, &mut memory.0[..])
            .is_err()
        {
            return false;
        }
        // `Output`'s equality is constant-time.
        Output::new(out).is_ok_and(|computed| &computed == expected)
    }

    /// Spends the same time as [`StoredSecret::verify_blocking`] and returns
    /// false: for unknown hosts, so that a wrong name and a wrong secret
    /// cannot be told apart by timing. Blocking.
    pub fn verify_nothing_blocking(secret: &str) -> bool {
        Self::verify_nothing_blocking_in(secret, &mut VerifyMemory::default())
    }

    /// [`StoredSecret::verify_nothing_blocking`] in `memory`.
    pub fn verify_nothing_blocking_in(secret: &str, memory: &mut VerifyMemory) -> bool {
        if let Ok(dummy) = dummy_hash() {
            let _ = StoredSecret(dummy.to_owned()).verify_blocking_in(secret, memory);
        }
        false
    }

    /// The hash's bytes, only to be fed into a keyed hash (the updater's
    /// credential cache key), so that changing the secret changes the key.
    pub fn key_material(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phc(algorithm: Algorithm, version: Version, m: u32, t: u32, p: u32, secret: &str) -> String {
        let params = Params::new(m, t, p, None).unwrap();
        Argon2::new(algorithm, version, params)
            .hash_password(secret.as_bytes())
            .unwrap()
            .to_string()
    }

    /// The reused-memory verification agrees with the argon2 crate's own
    /// `verify_password` on every kind of hash, with one memory carried
    /// from large parameters to small ones and back.
    #[test]
    fn verification_in_kept_memory_agrees_with_the_crate() {
        let mut memory = VerifyMemory::default();
        let cases = [
            (Algorithm::Argon2id, Version::V0x13, 19 * 1024, 2, 1),
            (Algorithm::Argon2id, Version::V0x13, 64, 1, 1),
            (Algorithm::Argon2i, Version::V0x13, 128, 3, 2),
            (Algorithm::Argon2d, Version::V0x10, 64, 1, 1),
            (Algorithm::Argon2id, Version::V0x13, 19 * 1024, 2, 1),
        ];
        for (algorithm, version, m, t, p) in cases {
            let stored = phc(algorithm, version, m, t, p, "correct secret");
            let parsed = PasswordHash::new(&stored).unwrap();
            let secret = StoredSecret::from_phc(stored.clone());
            for attempt in ["correct secret", "correct secreT", ""] {
                let crate_says = Argon2::default()
                    .verify_password(attempt.as_bytes(), &parsed)
                    .is_ok();
                assert_eq!(
                    secret.verify_blocking_in(attempt, &mut memory),
                    crate_says,
                    "{stored} / {attempt:?}"
                );
                assert_eq!(secret.verify_blocking(attempt), crate_says);
            }
            assert_eq!(memory.bytes(), m as usize * 1024, "{stored}");
        }
        memory.release();
        assert_eq!(memory.bytes(), 0);
    }

    #[test]
    fn malformed_hashes_never_verify() {
        let mut memory = VerifyMemory::default();
        for stored in [
            "",
            "not a hash",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
            "$argon2id$v=19$m=19456,t=2,p=1$$aGFzaGhhc2hoYXNoaGFzaA",
            "$scrypt$ln=16,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$v=99$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        ] {
            assert!(!StoredSecret::from_phc(stored.into()).verify_blocking_in("", &mut memory));
        }
        assert!(!StoredSecret::verify_nothing_blocking_in(
            "ddserver dummy secret",
            &mut memory
        ));
    }
}
