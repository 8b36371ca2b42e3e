//! Secrets for 9P `Tauth`, stored hashed.
//!
//! A key file line is `NAME sha256:SALT:HASH` (salt and hash in lower-case hex; HASH is
//! SHA-256 over the salt bytes followed by the secret bytes) or, for hand-written entries,
//! `NAME sha256:HASH` (no salt: `printf %s SECRET | sha256sum`). envoyd itself always writes
//! a fresh 16-byte random salt. A secret is never stored or logged; checks compare the
//! 32-byte digests in constant time.

use std::fmt;
use std::io::Read;

use sha2::{Digest, Sha256};

use super::grammar::check_name;

/// Longest secret accepted (bytes).
pub const SECRET_MAX: usize = 1024;

/// A salted SHA-256 of a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHash {
    salt: Vec<u8>,
    hash: [u8; 32],
}

fn digest(salt: &[u8], secret: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(secret);
    h.finalize().into()
}

/// Equality of two digests that takes the same time wherever they differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect()
}

impl KeyHash {
    /// Hashes `secret` with a fresh random salt.
    pub fn new(secret: &[u8]) -> std::io::Result<KeyHash> {
        let mut salt = vec![0u8; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut salt)?;
        let hash = digest(&salt, secret);
        Ok(KeyHash { salt, hash })
    }

    /// Whether `secret` is the one hashed.
    pub fn verify(&self, secret: &[u8]) -> bool {
        ct_eq(&digest(&self.salt, secret), &self.hash)
    }

    /// Parses `sha256:SALT:HASH` or `sha256:HASH`.
    pub fn parse(s: &str) -> Result<KeyHash, String> {
        let rest = s
            .strip_prefix("sha256:")
            .ok_or_else(|| "expected sha256:SALT:HASH or sha256:HASH".to_string())?;
        let (salt, hash) = match rest.split_once(':') {
            Some((s, h)) => (s, h),
            None => ("", rest),
        };
        let salt = unhex(salt).ok_or("salt is not hex")?;
        let hash: [u8; 32] = unhex(hash)
            .and_then(|h| h.try_into().ok())
            .ok_or("hash is not 64 hex digits")?;
        Ok(KeyHash { salt, hash })
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.salt.is_empty() {
            write!(f, "sha256:{}", hex(&self.hash))
        } else {
            write!(f, "sha256:{}:{}", hex(&self.salt), hex(&self.hash))
        }
    }
}

/// One line of the keys file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// The key's name (the principal is `key:NAME`).
    pub name: String,
    /// Its hashed secret.
    pub hash: KeyHash,
}

impl KeyEntry {
    /// Parses `NAME sha256:…`.
    pub fn parse(line: &str) -> Result<KeyEntry, String> {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let [name, hash] = f.as_slice() else {
            return Err(format!(
                "expected NAME sha256:SALT:HASH, found {} fields",
                f.len()
            ));
        };
        Ok(KeyEntry {
            name: check_name(name)?.to_string(),
            hash: KeyHash::parse(hash)?,
        })
    }
}

impl fmt::Display for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.hash)
    }
}

/// Checks `secret` against the entry named `name` among `keys`. An unknown name costs the
/// same hash as a known one, so timing does not tell which names exist.
pub fn check(keys: &[KeyEntry], name: &str, secret: &[u8]) -> bool {
    match keys.iter().find(|k| k.name == name) {
        Some(k) => k.verify_entry(secret),
        None => {
            let dummy = KeyHash {
                salt: vec![0; 16],
                hash: [0; 32],
            };
            let _ = dummy.verify(secret);
            false
        }
    }
}

impl KeyEntry {
    fn verify_entry(&self, secret: &[u8]) -> bool {
        self.hash.verify(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyhash_new_verifies_only_its_secret() {
        let k = KeyHash::new(b"s3cret").unwrap();
        assert!(k.verify(b"s3cret"));
        assert!(!k.verify(b"s3cret "));
        assert!(!k.verify(b""));
        let back = KeyHash::parse(&k.to_string()).unwrap();
        assert_eq!(back, k);
        assert!(!k.to_string().contains("s3cret"));
    }

    #[test]
    fn keyhash_unsalted_matches_sha256sum() {
        // printf %s abc | sha256sum
        let k = KeyHash::parse(
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        )
        .unwrap();
        assert!(k.verify(b"abc"));
        assert!(!k.verify(b"abd"));
    }

    #[test]
    fn keyentry_parse_malformed_rejected() {
        assert!(KeyEntry::parse("alice sha256:00").is_err());
        assert!(KeyEntry::parse("alice md5:00").is_err());
        assert!(KeyEntry::parse(
            "a/b sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        )
        .is_err());
        assert!(KeyEntry::parse("alice").is_err());
        assert!(KeyEntry::parse(
            "alice sha256:zz:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        )
        .is_err());
    }

    #[test]
    fn check_unknown_name_fails() {
        let keys = vec![KeyEntry {
            name: "alice".into(),
            hash: KeyHash::new(b"pw").unwrap(),
        }];
        assert!(check(&keys, "alice", b"pw"));
        assert!(!check(&keys, "alice", b"pw2"));
        assert!(!check(&keys, "bob", b"pw"));
    }
}
