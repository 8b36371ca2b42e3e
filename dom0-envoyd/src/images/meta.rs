//! Image metadata: `ADMIN/.envoy/NAME` (what the image is) and `ADMIN/.envoy/NAME@forks` (its
//! fork log). Text, one record per line, so an operator can read them with `cat`:
//!
//! ```text
//! .envoy/web                  .envoy/web@forks
//! envoy-image 1               fork 3 /tenants/bob/web
//! origin /templates/deb@2     fork 3 /tenants/carol/web
//!                             unfork 3 /tenants/bob/web
//! ```
//!
//! The metadata file is written once, when the image is made. The fork log is append-only:
//! forking snapshot 3 appends `fork 3 PATH`, deleting that fork appends `unfork 3 PATH`. An
//! append is one write at the end of the file (a killed process cannot tear it); a last line
//! without its newline — a torn append after a power failure — is ignored. The log is what
//! forbids deleting a snapshot with more than one successor (§4.3.3); deletion also checks the
//! `origin` lines of every image, so a lost log line can never let a forked snapshot go.

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
    /// Parses a metadata file and, if given, the fork log; anything unexpected is an error
    /// (never guessed around: the fork log decides what may be freed).
    pub fn parse_with_log(text: &[u8], log: Option<&[u8]>) -> FsResult<ImageMeta> {
        let mut m = ImageMeta::parse(text)?;
        if let Some(log) = log {
            m.forks.extend(parse_log(log)?);
        }
        Ok(m)
    }

    /// Parses a metadata file.
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

    /// The metadata file's contents (without the fork log).
    pub fn encode(&self) -> Vec<u8> {
        let mut s = String::from(HEADER);
        s.push('\n');
        if let Some(o) = &self.origin {
            s.push_str(&format!("origin {o}\n"));
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

/// One fork-log line.
pub fn log_line(fork: bool, n: u32, path: &str) -> Vec<u8> {
    format!("{} {n} {path}\n", if fork { "fork" } else { "unfork" }).into_bytes()
}

/// The forks a log records (each `fork` not followed by its `unfork`), in order.
pub fn parse_log(log: &[u8]) -> FsResult<Vec<(u32, String)>> {
    let complete = match log.iter().rposition(|&c| c == b'\n') {
        Some(i) => &log[..=i],
        None => &log[..0],
    };
    let text =
        std::str::from_utf8(complete).map_err(|_| FsError::Inval("fork log is not UTF-8"))?;
    let mut forks: Vec<(u32, String)> = Vec::new();
    for line in text.lines() {
        let mut w = line.splitn(3, ' ');
        let (kind, n, p) = match (w.next(), w.next(), w.next()) {
            (Some(k @ ("fork" | "unfork")), Some(n), Some(p)) if p.starts_with('/') => (k, n, p),
            _ => return Err(FsError::Inval("unknown line in fork log")),
        };
        let n: u32 = n
            .parse()
            .map_err(|_| FsError::Inval("bad snapshot number in fork log"))?;
        if kind == "fork" {
            forks.push((n, p.to_string()));
        } else if let Some(i) = forks.iter().position(|(k, q)| *k == n && q == p) {
            forks.remove(i);
        }
    }
    Ok(forks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_rejects_garbage() {
        let m = ImageMeta {
            origin: Some("/t/debian@2".into()),
            forks: vec![],
        };
        assert_eq!(ImageMeta::parse(&m.encode()).unwrap(), m);
        let mut log = log_line(true, 3, "/a/b");
        log.extend(log_line(true, 3, "/a/c d"));
        log.extend(log_line(true, 4, "/a/e"));
        log.extend(log_line(false, 4, "/a/e"));
        log.extend(b"fork 5 /torn".iter());
        let m = ImageMeta::parse_with_log(&m.encode(), Some(&log)).unwrap();
        assert_eq!(m.forks_of(3), vec!["/a/b", "/a/c d"]);
        assert!(m.forks_of(4).is_empty());
        assert!(m.forks_of(5).is_empty(), "a torn last line is ignored");
        assert!(parse_log(b"fork x /a\n").is_err());
        assert!(parse_log(b"\0\0\0\n").is_err());
        assert!(ImageMeta::parse(b"hello\n").is_err());
        assert!(ImageMeta::parse(b"envoy-image 1\nfork x /a\n").is_err());
        assert!(ImageMeta::parse(b"envoy-image 1\nwhat\n").is_err());
    }
}
