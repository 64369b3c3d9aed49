//! Passwords, hashed with argon2id inside the sandbox, at the parameters
//! OWASP recommends for it (19 MiB of memory, 2 passes, 1 lane): the hash
//! is stored as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`),
//! so a change of parameters applies to new hashes and old ones still
//! verify. The memory is the service's linear memory: its manifest gives it
//! room (`limits.memory-mb`).

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Memory per hash, in KiB.
const MEMORY_KIB: u32 = 19 * 1024;
/// Passes over the memory.
const PASSES: u32 = 2;

fn hasher() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, 1, None).unwrap_or_else(|_| unreachable!("the parameters are valid"));
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string of `password` with a salt of 16 bytes of `salt`.
pub fn hash(password: &str, salt: &[u8]) -> Result<String, String> {
    let salt = SaltString::encode_b64(salt).map_err(|e| format!("salt: {e}"))?;
    hasher().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| format!("hashing: {e}"))
}

/// Whether `password` matches the stored PHC string `stored`.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| hasher().verify_password(password.as_bytes(), &parsed).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let stored = hash("jakejake", &[7; 16]).expect("hashes");
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        assert!(verify("jakejake", &stored));
        assert!(!verify("jakejakf", &stored));
        assert!(!verify("jakejake", "not a hash"));
        // Another salt, another hash.
        assert_ne!(hash("jakejake", &[8; 16]).expect("hashes"), stored);
    }
}
