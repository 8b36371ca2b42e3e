//! The image metadata file, `ADMIN/.envoy/NAME`: where a fork came from, and the fork log.
//!
//! Text, one record per line, so an operator can read it with `cat`:
//!
//! ```text
//! envoy-image 1
//! origin /templates/debian@2        (a fork: the snapshot it started from)
//! fork 3 /tenants/bob/web           (the fork log: snapshot 3 of this image was forked)
//! ```
//!
//! The fork log is what forbids deleting a snapshot with more than one successor (§4.3.3).
//! Updates rewrite the file under a temporary name and rename it over the old one, so a crash
//! leaves the old log or the new one.

use crate::error::{FsError, FsResult};

/// First line of every metadata file.
pub const HEADER: &str = "envoy-image 1";

/// Parsed metadata of one image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageMeta {
    /// For a fork: the snapshot path it started from.
    pub origin: Option<String>,
    /// Forks taken from this image's snapshots: (snapshot number, fork's head path).
    pub forks: Vec<(u32, String)>,
}

impl ImageMeta {
    /// Parses a metadata file; anything unexpected is an error (never guessed around: the
    /// fork log decides what may be freed).
    pub fn parse(text: &[u8]) -> FsResult<ImageMeta> {
        let text =
            std::str::from_utf8(text).map_err(|_| FsError::Inval("image metadata is not UTF-8"))?;
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(FsError::Inval("image metadata has no envoy-image header"));
        }
        let mut m = ImageMeta::default();
        for line in lines {
            let mut w = line.splitn(3, ' ');
            match (w.next(), w.next(), w.next()) {
                (Some("origin"), Some(p), None) if p.starts_with('/') => m.origin = Some(p.into()),
                (Some("fork"), Some(n), Some(p)) if p.starts_with('/') => {
                    let n = n
                        .parse()
                        .map_err(|_| FsError::Inval("bad snapshot number in fork log"))?;
                    m.forks.push((n, p.to_string()));
                }
                (Some(""), None, None) => {}
                _ => return Err(FsError::Inval("unknown line in image metadata")),
            }
        }
        Ok(m)
    }

    /// The file's contents.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = String::from(HEADER);
        s.push('\n');
        if let Some(o) = &self.origin {
            s.push_str(&format!("origin {o}\n"));
        }
        for (n, p) in &self.forks {
            s.push_str(&format!("fork {n} {p}\n"));
        }
        s.into_bytes()
    }

    /// Forks taken from snapshot `n`.
    pub fn forks_of(&self, n: u32) -> Vec<&str> {
        self.forks
            .iter()
            .filter(|(k, _)| *k == n)
            .map(|(_, p)| p.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_rejects_garbage() {
        let m = ImageMeta {
            origin: Some("/t/debian@2".into()),
            forks: vec![(3, "/a/b".into()), (3, "/a/c d".into())],
        };
        assert_eq!(ImageMeta::parse(&m.encode()).unwrap(), m);
        assert_eq!(m.forks_of(3), vec!["/a/b", "/a/c d"]);
        assert!(ImageMeta::parse(b"hello\n").is_err());
        assert!(ImageMeta::parse(b"envoy-image 1\nfork x /a\n").is_err());
        assert!(ImageMeta::parse(b"envoy-image 1\nwhat\n").is_err());
    }
}
