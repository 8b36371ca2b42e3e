//! The image registry: which directories are images and which snapshot each fork started
//! from, kept as one append-only journal, `/.envoy/@images`, and in memory as the namespace's
//! [`ImageTable`].
//!
//! ```text
//! envoy-images 1
//! image /default
//! image /templates/deb
//! image /tenants/bob/web from /templates/deb@2
//! delete /tenants/bob/web
//! ```
//!
//! Text, one record per line, so an operator can read it with `cat`. Paths are escaped
//! (`%`, space and control characters as `%XX`). The journal is read once, at start; every
//! change afterwards is one write at its end:
//!
//! * creating, importing or adopting an image appends `image PATH`;
//! * a fork appends `image PATH from SNAPSHOT`: the log of forks that §4.3.3 consults before
//!   deleting a snapshot is the set of live images whose origin is that snapshot;
//! * deleting an image appends `delete PATH`, which also ends its entry in the fork log.
//!
//! Why one journal and not a metadata file per image (the first design): a fork then made a
//! file (a rename of a spare into the store, a block of the `.envoy` directory and the rename
//! that records that directory's mtime) and appended to its source's fork-log file. That was
//! about 40 % of a fork. A journal line is one `pwrite` to the page cache.
//!
//! Crash safety: an append is one write at the end of the file, which a killed process cannot
//! tear; a last line without its newline (a torn append after a power failure) is ignored.
//! The record is written before the head is linked, so a crash leaves a registered image with
//! no head, which [`super::Images::open`] removes with a `delete` record. Any other line that
//! does not parse stops the start with an error: the journal decides what deletion may free,
//! so it is never guessed around. At start a journal with many `delete` records is rewritten
//! (temporary file, then rename).

use std::collections::BTreeMap;

use crate::error::{FsError, FsResult};

/// Name of the journal in the root's `.envoy` directory.
pub const JOURNAL: &str = "@images";
/// First line of the journal.
pub const HEADER: &str = "envoy-images 1";

/// Image head path → the snapshot it was forked from.
pub type Table = BTreeMap<String, Option<String>>;

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// An image was made at `head` (forked from `origin`, if any).
    Image {
        /// The head's path.
        head: String,
        /// The snapshot a fork started from.
        origin: Option<String>,
    },
    /// The image at `head` was deleted (or never linked).
    Delete {
        /// The head's path.
        head: String,
    },
}

impl Record {
    /// The record as one journal line.
    pub fn encode(&self) -> Vec<u8> {
        let line = match self {
            Record::Image { head, origin: None } => format!("image {}\n", escape(head)),
            Record::Image {
                head,
                origin: Some(o),
            } => format!("image {} from {}\n", escape(head), escape(o)),
            Record::Delete { head } => format!("delete {}\n", escape(head)),
        };
        line.into_bytes()
    }

    /// Applies the record to `table`.
    pub fn apply(&self, table: &mut Table) {
        match self {
            Record::Image { head, origin } => {
                table.insert(head.clone(), origin.clone());
            }
            Record::Delete { head } => {
                table.remove(head);
            }
        }
    }
}

/// A whole journal for `table` (what compaction writes).
pub fn encode_table(table: &Table) -> Vec<u8> {
    let mut out = format!("{HEADER}\n").into_bytes();
    for (head, origin) in table {
        out.extend(
            Record::Image {
                head: head.clone(),
                origin: origin.clone(),
            }
            .encode(),
        );
    }
    out
}

/// A journal line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} ({why}): {text:?}")]
pub struct JournalError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub why: &'static str,
    /// The line (lossily decoded).
    pub text: String,
}

/// Parses a journal: the live table and how many records it holds.
pub fn parse(journal: &[u8]) -> Result<(Table, usize), JournalError> {
    if journal.is_empty() {
        return Ok((Table::new(), 0));
    }
    // Everything up to the last newline: a torn last append is ignored.
    let complete = match journal.iter().rposition(|&c| c == b'\n') {
        Some(i) => &journal[..i],
        None => {
            return Err(JournalError {
                line: 1,
                why: "no envoy-images header",
                text: String::from_utf8_lossy(journal).into_owned(),
            })
        }
    };
    let mut table = Table::new();
    let mut records = 0;
    for (i, raw) in complete.split(|&c| c == b'\n').enumerate() {
        let bad = |why| JournalError {
            line: i + 1,
            why,
            text: String::from_utf8_lossy(raw).into_owned(),
        };
        let line = std::str::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
        if i == 0 {
            if line != HEADER {
                return Err(bad("no envoy-images header"));
            }
            continue;
        }
        let record = parse_line(line).map_err(|e| match e {
            FsError::Inval(why) => bad(why),
            _ => bad("does not parse"),
        })?;
        record.apply(&mut table);
        records += 1;
    }
    Ok((table, records))
}

fn parse_line(line: &str) -> FsResult<Record> {
    let bad = FsError::Inval("a line of the image journal does not parse");
    let w: Vec<&str> = line.split(' ').collect();
    let path = |s: &str| -> FsResult<String> {
        let p = unescape(s).ok_or(FsError::Inval("a path in the image journal is damaged"))?;
        if p.starts_with('/') {
            Ok(p)
        } else {
            Err(FsError::Inval(
                "a path in the image journal is not absolute",
            ))
        }
    };
    match w.as_slice() {
        ["image", head] => Ok(Record::Image {
            head: path(head)?,
            origin: None,
        }),
        ["image", head, "from", origin] => Ok(Record::Image {
            head: path(head)?,
            origin: Some(path(origin)?),
        }),
        ["delete", head] => Ok(Record::Delete { head: path(head)? }),
        _ => Err(bad),
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '%' || c == ' ' || c.is_control() {
            let mut b = [0u8; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hi = (it.next()? as char).to_digit(16)?;
            let lo = (it.next()? as char).to_digit(16)?;
            bytes.push((hi * 16 + lo) as u8);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

/// The origin recorded in a metadata file of the first design (`.envoy/NAME`: a header line,
/// then `origin PATH`), for moving an old store to the journal.
pub fn legacy_origin(text: &[u8]) -> FsResult<Option<String>> {
    let text = std::str::from_utf8(text)
        .map_err(|_| FsError::Inval("an old image metadata file is not UTF-8"))?;
    let mut lines = text.lines();
    if lines.next() != Some("envoy-image 1") {
        return Err(FsError::Inval("an old image metadata file has no header"));
    }
    Ok(lines.find_map(|l| {
        l.strip_prefix("origin ")
            .filter(|p| p.starts_with('/'))
            .map(str::to_string)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(records: &[Record]) -> Vec<u8> {
        let mut j = format!("{HEADER}\n").into_bytes();
        for r in records {
            j.extend(r.encode());
        }
        j
    }

    #[test]
    fn journal_replays_creates_forks_and_deletes() {
        let j = journal(&[
            Record::Image {
                head: "/t/deb".into(),
                origin: None,
            },
            Record::Image {
                head: "/u/a b%c\n".into(),
                origin: Some("/t/deb@2".into()),
            },
            Record::Image {
                head: "/u/gone".into(),
                origin: Some("/t/deb@2".into()),
            },
            Record::Delete {
                head: "/u/gone".into(),
            },
        ]);
        let (t, n) = parse(&j).unwrap();
        assert_eq!(n, 4);
        assert_eq!(t.len(), 2);
        assert_eq!(t["/u/a b%c\n"].as_deref(), Some("/t/deb@2"));
        assert_eq!(t["/t/deb"], None);
        let (again, _) = parse(&encode_table(&t)).unwrap();
        assert_eq!(again, t);
    }

    #[test]
    fn torn_last_line_is_ignored_and_damage_is_an_error() {
        let mut j = journal(&[Record::Image {
            head: "/t/deb".into(),
            origin: None,
        }]);
        j.extend(b"image /t/torn");
        let (t, _) = parse(&j).unwrap();
        assert_eq!(t.keys().collect::<Vec<_>>(), vec!["/t/deb"]);
        assert!(parse(b"").unwrap().0.is_empty());
        for bad in [
            &b"hello\n"[..],
            b"envoy-images 1\nimage t/rel\n",
            b"envoy-images 1\nimage /a from\n",
            b"envoy-images 1\nforget /a\n",
            b"envoy-images 1\nimage /a%zz\n",
            b"envoy-images 1\nimage /a%ff\n",
            b"envoy-images 1\n\xff\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let e = parse(b"envoy-images 1\nimage /a\ndelete b\nimage /c\n").unwrap_err();
        assert_eq!((e.line, e.text.as_str()), (3, "delete b"));
    }

    #[test]
    fn legacy_metadata_gives_its_origin() {
        assert_eq!(legacy_origin(b"envoy-image 1\n").unwrap(), None);
        assert_eq!(
            legacy_origin(b"envoy-image 1\norigin /t/deb@2\n")
                .unwrap()
                .as_deref(),
            Some("/t/deb@2")
        );
        assert!(legacy_origin(b"other\n").is_err());
    }
}
