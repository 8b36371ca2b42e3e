//! Golden frames shared by the golden tests and the fuzz-seed writer.
//!
//! Hex strings ignore whitespace; `#` starts a comment to the end of the line. Every frame
//! starts with `size[4] type[1] tag[2]`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use envoy_proto::*;

/// Parses commented hex.
pub fn hex(s: &str) -> Vec<u8> {
    let digits: String = s
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits in {s}");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Lower-case hex for readable assertion failures.
pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `80 01000000 1000000000000000`: a directory, version 1, path 0x10.
pub const Q: Qid = Qid {
    ty: qid_type::DIR,
    version: 1,
    path: 0x10,
};
/// `00 00000000 1100000000000000`: a file, version 0, path 0x11.
pub const Q2: Qid = Qid {
    ty: qid_type::FILE,
    version: 0,
    path: 0x11,
};

/// ObjAttr `A`: kind=regular mode=0644 uid=gid=1000 atime=1.2 mtime=3.4, on the wire
/// `00 a4010000 e8030000 e8030000 0100000000000000 02000000 0300000000000000 04000000`.
pub const A: ObjAttr = ObjAttr {
    kind: obj_kind::REGULAR,
    mode: 0o644,
    uid: 1000,
    gid: 1000,
    atime_sec: 1,
    atime_nsec: 2,
    mtime_sec: 3,
    mtime_nsec: 4,
};

/// ObjStat `S`: id 0x42, attr A, size 5, ctime 6.7, blocks 8.
pub const S: ObjStat = ObjStat {
    id: 0x42,
    attr: A,
    size: 5,
    ctime_sec: 6,
    ctime_nsec: 7,
    blocks: 8,
};

pub struct Golden {
    pub dialects: &'static [Dialect],
    pub tag: Tag,
    pub msg: Message,
    pub hex: &'static str,
}

const ALL: &[Dialect] = &[
    Dialect::P2000,
    Dialect::P2000u,
    Dialect::P2000L,
    Dialect::Storage,
];
const NINE: &[Dialect] = &[Dialect::P2000, Dialect::P2000u, Dialect::P2000L];
const CLASSIC: &[Dialect] = &[Dialect::P2000, Dialect::P2000u];
const PLAIN: &[Dialect] = &[Dialect::P2000];
const DOTU: &[Dialect] = &[Dialect::P2000u];
const UL: &[Dialect] = &[Dialect::P2000u, Dialect::P2000L];
const L: &[Dialect] = &[Dialect::P2000L];
const LS: &[Dialect] = &[Dialect::P2000L, Dialect::Storage];
const ST: &[Dialect] = &[Dialect::Storage];

fn g(dialects: &'static [Dialect], tag: u16, msg: impl Into<Message>, hex: &'static str) -> Golden {
    Golden {
        dialects,
        tag: Tag(tag),
        msg: msg.into(),
        hex,
    }
}

fn s(v: &str) -> String {
    v.to_owned()
}

fn stat_plain() -> Stat {
    Stat {
        ty: 0,
        dev: 0,
        qid: Q,
        mode: dm::DIR | 0o755,
        atime: 1,
        mtime: 2,
        length: 0,
        name: s("/"),
        uid: s("bob"),
        gid: s("bob"),
        muid: s(""),
        ..Stat::default()
    }
}

fn stat_dontcare() -> Stat {
    Stat {
        name: s("x"),
        ..Stat::dont_touch()
    }
}

/// Every golden frame.
pub fn goldens() -> Vec<Golden> {
    vec![
        // ---- handshake ---------------------------------------------------------------
        g(
            ALL,
            0xffff,
            Tversion {
                msize: 8192,
                version: s("9P2000.L"),
            },
            "
            15000000 64 ffff      # size=21 Tversion tag=NOTAG
            00200000              # msize=8192
            0800 3950323030302e4c # version[8]=\"9P2000.L\"",
        ),
        g(
            ALL,
            0xffff,
            Rversion {
                msize: 8192,
                version: s("9P2000.L"),
            },
            "
            15000000 65 ffff 00200000 0800 3950323030302e4c",
        ),
        g(
            ALL,
            0xffff,
            Tversion {
                msize: 8192,
                version: s("Envoy.storage.1"),
            },
            "
            1c000000 64 ffff      # size=28 Tversion
            00200000              # msize=8192
            0f00 456e766f792e73746f726167652e31 # \"Envoy.storage.1\"",
        ),
        g(
            ALL,
            0xffff,
            Rversion {
                msize: 4096,
                version: s("unknown"),
            },
            "
            14000000 65 ffff 00100000 0700 756e6b6e6f776e # size=20 msize=4096 \"unknown\"",
        ),
        // ---- auth / attach: n_uname only in .u/.L ------------------------------------
        g(
            PLAIN,
            1,
            Tauth {
                afid: Fid(5),
                uname: s("bob"),
                aname: s(""),
                n_uname: NONUNAME,
            },
            "
            12000000 66 0100      # size=18 Tauth tag=1
            05000000              # afid=5
            0300 626f62           # uname=\"bob\"
            0000                  # aname=\"\"",
        ),
        g(
            UL,
            1,
            Tauth {
                afid: Fid(5),
                uname: s("bob"),
                aname: s(""),
                n_uname: 1000,
            },
            "
            16000000 66 0100 05000000 0300 626f62 0000
            e8030000              # n_uname=1000",
        ),
        g(
            NINE,
            1,
            Rauth { aqid: Q },
            "
            14000000 67 0100      # size=20 Rauth
            80 01000000 1000000000000000 # aqid",
        ),
        g(
            PLAIN,
            1,
            Tattach {
                fid: Fid(1),
                afid: Fid::NOFID,
                uname: s("bob"),
                aname: s("/srv"),
                n_uname: NONUNAME,
            },
            "
            1a000000 68 0100      # size=26 Tattach
            01000000 ffffffff     # fid=1 afid=NOFID
            0300 626f62           # uname=\"bob\"
            0400 2f737276         # aname=\"/srv\"",
        ),
        g(
            UL,
            1,
            Tattach {
                fid: Fid(1),
                afid: Fid::NOFID,
                uname: s("bob"),
                aname: s("/srv"),
                n_uname: 1000,
            },
            "
            1e000000 68 0100 01000000 ffffffff 0300 626f62 0400 2f737276
            e8030000              # n_uname=1000",
        ),
        g(
            NINE,
            1,
            Rattach { qid: Q },
            "14000000 69 0100 80 01000000 1000000000000000",
        ),
        // ---- errors ------------------------------------------------------------------
        g(
            PLAIN,
            1,
            Rerror {
                ename: s("no such file"),
                errno: 0,
            },
            "
            15000000 6b 0100      # size=21 Rerror
            0c00 6e6f2073756368206669 6c65 # ename=\"no such file\"",
        ),
        g(
            DOTU,
            1,
            Rerror {
                ename: s("no such file"),
                errno: 2,
            },
            "
            19000000 6b 0100 0c00 6e6f20737563682066696c65
            02000000              # errno=ENOENT",
        ),
        g(
            LS,
            1,
            Rlerror { ecode: 2 },
            "0b000000 07 0100 02000000 # ecode=ENOENT",
        ),
        // ---- flush / walk ------------------------------------------------------------
        g(
            NINE,
            2,
            Tflush { oldtag: Tag(7) },
            "09000000 6c 0200 0700 # oldtag=7",
        ),
        g(NINE, 2, Rflush {}, "07000000 6d 0200"),
        g(
            NINE,
            1,
            Twalk {
                fid: Fid(1),
                newfid: Fid(2),
                wnames: vec![s("usr"), s("lib")],
            },
            "
            1b000000 6e 0100      # size=27 Twalk
            01000000 02000000     # fid=1 newfid=2
            0200                  # nwname=2
            0300 757372 0300 6c6962 # \"usr\" \"lib\"",
        ),
        g(
            NINE,
            1,
            Twalk {
                fid: Fid(1),
                newfid: Fid(2),
                wnames: vec![],
            },
            "
            11000000 6e 0100 01000000 02000000 0000 # clone: nwname=0",
        ),
        g(
            NINE,
            1,
            Rwalk { wqids: vec![Q, Q2] },
            "
            23000000 6f 0100      # size=35 Rwalk
            0200                  # nwqid=2
            80 01000000 1000000000000000
            00 00000000 1100000000000000",
        ),
        // ---- open / create (9P2000, .u) ----------------------------------------------
        g(
            CLASSIC,
            1,
            Topen {
                fid: Fid(1),
                mode: open::RDWR | open::TRUNC,
            },
            "
            0c000000 70 0100 01000000 12 # mode=ORDWR|OTRUNC",
        ),
        g(
            CLASSIC,
            1,
            Ropen { qid: Q2, iounit: 0 },
            "
            18000000 71 0100 00 00000000 1100000000000000 00000000",
        ),
        g(
            PLAIN,
            1,
            Tcreate {
                fid: Fid(1),
                name: s("new"),
                perm: 0o644,
                mode: open::WRITE,
                extension: s(""),
            },
            "
            15000000 72 0100      # size=21 Tcreate
            01000000 0300 6e6577  # fid=1 name=\"new\"
            a4010000 01           # perm=0644 mode=OWRITE",
        ),
        g(
            DOTU,
            1,
            Tcreate {
                fid: Fid(1),
                name: s("new"),
                perm: dm::SYMLINK | 0o777,
                mode: open::READ,
                extension: s("/tmp"),
            },
            "
            1b000000 72 0100 01000000 0300 6e6577
            ff010002 00           # perm=DMSYMLINK|0777 mode=OREAD
            0400 2f746d70         # extension=\"/tmp\"",
        ),
        g(
            CLASSIC,
            1,
            Rcreate {
                qid: Q2,
                iounit: 8168,
            },
            "
            18000000 73 0100 00 00000000 1100000000000000 e81f0000",
        ),
        // ---- read / write ------------------------------------------------------------
        g(
            NINE,
            1,
            Tread {
                fid: Fid(1),
                offset: 0x1000,
                count: 4096,
            },
            "
            17000000 74 0100 01000000 0010000000000000 00100000",
        ),
        g(
            NINE,
            1,
            Rread {
                data: Bytes::from_static(b"hello"),
            },
            "
            10000000 75 0100 05000000 68656c6c6f",
        ),
        g(
            NINE,
            1,
            Twrite {
                fid: Fid(1),
                offset: 0,
                data: Bytes::from_static(b"hello"),
            },
            "
            1c000000 76 0100 01000000 0000000000000000 05000000 68656c6c6f",
        ),
        g(NINE, 1, Rwrite { count: 5 }, "0b000000 77 0100 05000000"),
        g(NINE, 1, Tclunk { fid: Fid(1) }, "0b000000 78 0100 01000000"),
        g(NINE, 1, Rclunk {}, "07000000 79 0100"),
        g(
            NINE,
            1,
            Tremove { fid: Fid(1) },
            "0b000000 7a 0100 01000000",
        ),
        g(NINE, 1, Rremove {}, "07000000 7b 0100"),
        // ---- stat / wstat ------------------------------------------------------------
        g(
            CLASSIC,
            1,
            Tstat { fid: Fid(1) },
            "0b000000 7c 0100 01000000",
        ),
        g(
            PLAIN,
            1,
            Rstat { stat: stat_plain() },
            "
            41000000 7d 0100      # size=65 Rstat
            3800                  # n=56
            3600                  # stat.size=54
            0000 00000000         # type dev
            80 01000000 1000000000000000 # qid
            ed010080              # mode=DMDIR|0755
            01000000 02000000     # atime mtime
            0000000000000000      # length
            0100 2f 0300 626f62 0300 626f62 0000 # name uid gid muid",
        ),
        g(
            DOTU,
            1,
            Rstat {
                stat: Stat {
                    extension: s(""),
                    n_uid: 1000,
                    n_gid: 1000,
                    n_muid: NONUNAME,
                    ..stat_plain()
                },
            },
            "
            4f000000 7d 0100      # size=79
            4600 4400             # n=70 stat.size=68
            0000 00000000 80 01000000 1000000000000000 ed010080 01000000 02000000 0000000000000000
            0100 2f 0300 626f62 0300 626f62 0000
            0000                  # extension=\"\"
            e8030000 e8030000 ffffffff # n_uid n_gid n_muid",
        ),
        g(
            PLAIN,
            1,
            Twstat {
                fid: Fid(1),
                stat: stat_dontcare(),
            },
            "
            3f000000 7e 0100      # size=63 Twstat
            01000000              # fid
            3200 3000             # n=50 stat.size=48
            ffff ffffffff ff ffffffff ffffffffffffffff ffffffff ffffffff ffffffff ffffffffffffffff
            0100 78 0000 0000 0000 # name=\"x\", rest unchanged",
        ),
        g(
            DOTU,
            1,
            Twstat {
                fid: Fid(1),
                stat: stat_dontcare(),
            },
            "
            4d000000 7e 0100 01000000
            4000 3e00             # n=64 stat.size=62
            ffff ffffffff ff ffffffff ffffffffffffffff ffffffff ffffffff ffffffff ffffffffffffffff
            0100 78 0000 0000 0000
            0000 ffffffff ffffffff ffffffff",
        ),
        g(CLASSIC, 1, Rwstat {}, "07000000 7f 0100"),
        // ---- 9P2000.L ----------------------------------------------------------------
        g(L, 1, Tstatfs { fid: Fid(1) }, "0b000000 08 0100 01000000"),
        g(
            L,
            1,
            Rstatfs {
                ty: 0x0102_1997,
                bsize: 4096,
                blocks: 1000,
                bfree: 500,
                bavail: 400,
                files: 100,
                ffree: 50,
                fsid: 0x1234,
                namelen: 255,
            },
            "
            43000000 09 0100      # size=67 Rstatfs
            97190201 00100000     # type=V9FS_MAGIC bsize=4096
            e803000000000000 f401000000000000 9001000000000000 # blocks bfree bavail
            6400000000000000 3200000000000000 # files ffree
            3412000000000000 ff000000 # fsid namelen",
        ),
        g(
            L,
            1,
            Tlopen {
                fid: Fid(1),
                flags: lopen::RDWR | lopen::TRUNC,
            },
            "
            0f000000 0c 0100 01000000 02020000 # flags=O_RDWR|O_TRUNC",
        ),
        g(
            L,
            1,
            Rlopen { qid: Q2, iounit: 0 },
            "18000000 0d 0100 00 00000000 1100000000000000 00000000",
        ),
        g(
            L,
            1,
            Tlcreate {
                fid: Fid(1),
                name: s("f"),
                flags: lopen::CREATE | lopen::RDWR,
                mode: 0o644,
                gid: 1000,
            },
            "
            1a000000 0e 0100 01000000 0100 66
            42000000 a4010000 e8030000 # flags=O_CREAT|O_RDWR mode=0644 gid=1000",
        ),
        g(
            L,
            1,
            Rlcreate { qid: Q2, iounit: 0 },
            "18000000 0f 0100 00 00000000 1100000000000000 00000000",
        ),
        g(
            L,
            1,
            Tsymlink {
                fid: Fid(1),
                name: s("ln"),
                symtgt: s("t"),
                gid: 1000,
            },
            "
            16000000 10 0100 01000000 0200 6c6e 0100 74 e8030000",
        ),
        g(
            L,
            1,
            Rsymlink { qid: Q2 },
            "14000000 11 0100 00 00000000 1100000000000000",
        ),
        g(
            L,
            1,
            Tmknod {
                dfid: Fid(1),
                name: s("p"),
                mode: 0o10644,
                major: 0,
                minor: 0,
                gid: 1000,
            },
            "
            1e000000 12 0100 01000000 0100 70
            a4110000 00000000 00000000 e8030000 # mode=S_IFIFO|0644 major minor gid",
        ),
        g(
            L,
            1,
            Rmknod { qid: Q2 },
            "14000000 13 0100 00 00000000 1100000000000000",
        ),
        g(
            L,
            1,
            Trename {
                fid: Fid(2),
                dfid: Fid(1),
                name: s("b"),
            },
            "12000000 14 0100 02000000 01000000 0100 62",
        ),
        g(L, 1, Rrename {}, "07000000 15 0100"),
        g(L, 1, Treadlink { fid: Fid(2) }, "0b000000 16 0100 02000000"),
        g(
            L,
            1,
            Rreadlink {
                target: s("target"),
            },
            "0f000000 17 0100 0600 746172676574",
        ),
        g(
            L,
            1,
            Tgetattr {
                fid: Fid(1),
                request_mask: getattr::BASIC,
            },
            "13000000 18 0100 01000000 ff07000000000000",
        ),
        g(
            L,
            1,
            Rgetattr {
                valid: getattr::BASIC,
                qid: Q,
                mode: 0o100644,
                uid: 1000,
                gid: 1000,
                nlink: 1,
                rdev: 0,
                size: 5,
                blksize: 4096,
                blocks: 8,
                atime_sec: 1,
                atime_nsec: 2,
                mtime_sec: 3,
                mtime_nsec: 4,
                ctime_sec: 5,
                ctime_nsec: 6,
                btime_sec: 0,
                btime_nsec: 0,
                gen: 0,
                data_version: 0,
            },
            "
            a0000000 19 0100      # size=160 Rgetattr
            ff07000000000000      # valid=BASIC
            80 01000000 1000000000000000
            a4810000 e8030000 e8030000 # mode=S_IFREG|0644 uid gid
            0100000000000000 0000000000000000 0500000000000000 # nlink rdev size
            0010000000000000 0800000000000000 # blksize blocks
            0100000000000000 0200000000000000 0300000000000000 0400000000000000 # atime mtime
            0500000000000000 0600000000000000 # ctime
            0000000000000000 0000000000000000 # btime
            0000000000000000 0000000000000000 # gen data_version",
        ),
        g(
            L,
            1,
            Tsetattr {
                fid: Fid(1),
                valid: setattr::MODE | setattr::SIZE,
                mode: 0o600,
                uid: 0,
                gid: 0,
                size: 0,
                atime_sec: 0,
                atime_nsec: 0,
                mtime_sec: 0,
                mtime_nsec: 0,
            },
            "
            43000000 1a 0100 01000000
            09000000 80010000 00000000 00000000 # valid=MODE|SIZE mode=0600 uid gid
            0000000000000000      # size
            0000000000000000 0000000000000000 0000000000000000 0000000000000000",
        ),
        g(L, 1, Rsetattr {}, "07000000 1b 0100"),
        g(
            L,
            1,
            Txattrwalk {
                fid: Fid(1),
                newfid: Fid(2),
                name: s("user.a"),
            },
            "
            17000000 1e 0100 01000000 02000000 0600 757365722e61",
        ),
        g(
            L,
            1,
            Rxattrwalk { size: 3 },
            "0f000000 1f 0100 0300000000000000",
        ),
        g(
            L,
            1,
            Txattrcreate {
                fid: Fid(2),
                name: s("user.a"),
                attr_size: 3,
                flags: xattr::CREATE,
            },
            "
            1f000000 20 0100 02000000 0600 757365722e61 0300000000000000 01000000",
        ),
        g(L, 1, Rxattrcreate {}, "07000000 21 0100"),
        g(
            L,
            1,
            Treaddir {
                fid: Fid(1),
                offset: 0,
                count: 8168,
            },
            "
            17000000 28 0100 01000000 0000000000000000 e81f0000",
        ),
        g(
            L,
            1,
            Rreaddir {
                data: Bytes::from(hex("
            80 01000000 1000000000000000 0100000000000000 04 0100 2e
            00 00000000 1100000000000000 0200000000000000 08 0100 66")),
            },
            "
            3d000000 29 0100      # size=61 Rreaddir
            32000000              # count=50
            80 01000000 1000000000000000 0100000000000000 04 0100 2e # \".\" DT_DIR next=1
            00 00000000 1100000000000000 0200000000000000 08 0100 66 # \"f\" DT_REG next=2",
        ),
        g(
            L,
            1,
            Tfsync {
                fid: Fid(1),
                datasync: 0,
            },
            "0f000000 32 0100 01000000 00000000",
        ),
        g(L, 1, Rfsync {}, "07000000 33 0100"),
        g(
            L,
            1,
            Tlock {
                fid: Fid(1),
                ty: lock::TYPE_WRLCK,
                flags: lock::FLAGS_BLOCK,
                start: 0,
                length: 0,
                proc_id: 42,
                client_id: s("host"),
            },
            "
            2a000000 34 0100 01000000
            01 01000000           # type=WRLCK flags=BLOCK
            0000000000000000 0000000000000000 # start length
            2a000000 0400 686f7374 # proc_id=42 client_id=\"host\"",
        ),
        g(
            L,
            1,
            Rlock {
                status: lock::STATUS_SUCCESS,
            },
            "08000000 35 0100 00",
        ),
        g(
            L,
            1,
            Tgetlock {
                fid: Fid(1),
                ty: lock::TYPE_RDLCK,
                start: 10,
                length: 20,
                proc_id: 42,
                client_id: s("host"),
            },
            "
            26000000 36 0100 01000000 00 0a00000000000000 1400000000000000 2a000000 0400 686f7374",
        ),
        g(
            L,
            1,
            Rgetlock {
                ty: lock::TYPE_UNLCK,
                start: 10,
                length: 20,
                proc_id: 42,
                client_id: s("host"),
            },
            "
            22000000 37 0100 02 0a00000000000000 1400000000000000 2a000000 0400 686f7374",
        ),
        g(
            L,
            1,
            Tlink {
                dfid: Fid(1),
                fid: Fid(2),
                name: s("hl"),
            },
            "13000000 46 0100 01000000 02000000 0200 686c",
        ),
        g(L, 1, Rlink {}, "07000000 47 0100"),
        g(
            L,
            1,
            Tmkdir {
                dfid: Fid(1),
                name: s("d"),
                mode: 0o755,
                gid: 1000,
            },
            "16000000 48 0100 01000000 0100 64 ed010000 e8030000",
        ),
        g(
            L,
            1,
            Rmkdir { qid: Q },
            "14000000 49 0100 80 01000000 1000000000000000",
        ),
        g(
            L,
            1,
            Trenameat {
                olddirfid: Fid(1),
                oldname: s("a"),
                newdirfid: Fid(2),
                newname: s("b"),
            },
            "
            15000000 4a 0100 01000000 0100 61 02000000 0100 62",
        ),
        g(L, 1, Rrenameat {}, "07000000 4b 0100"),
        g(
            L,
            1,
            Tunlinkat {
                dirfid: Fid(1),
                name: s("d"),
                flags: unlinkat::REMOVEDIR,
            },
            "
            12000000 4c 0100 01000000 0100 64 00020000",
        ),
        g(L, 1, Runlinkat {}, "07000000 4d 0100"),
        // ---- storage service ---------------------------------------------------------
        g(
            ST,
            1,
            Tsreserve { count: 64 },
            "0f000000 a0 0100 4000000000000000",
        ),
        g(
            ST,
            1,
            Rsreserve {
                first: 0x1000,
                count: 64,
            },
            "17000000 a1 0100 0010000000000000 4000000000000000",
        ),
        g(ST, 1, Tscreate { id: 0x42, attr: A }, TSCREATE_HEX),
        g(ST, 1, Rscreate { stat: S }, RSTAT_HEX_A3),
        g(
            ST,
            1,
            Tsclone {
                src: 0x42,
                dst: 0x43,
            },
            "17000000 a4 0100 4200000000000000 4300000000000000",
        ),
        g(ST, 1, Rsclone { stat: S }, RSTAT_HEX_A5),
        g(
            ST,
            1,
            Tsread {
                id: 0x42,
                offset: 0,
                count: 4096,
            },
            "1b000000 a6 0100 4200000000000000 0000000000000000 00100000",
        ),
        g(
            ST,
            1,
            Rsread {
                data: Bytes::from_static(b"hello"),
            },
            "10000000 a7 0100 05000000 68656c6c6f",
        ),
        g(
            ST,
            1,
            Tswrite {
                id: 0x42,
                offset: 0x10,
                data: Bytes::from_static(b"hello"),
            },
            "
            20000000 a8 0100 4200000000000000 1000000000000000 05000000 68656c6c6f",
        ),
        g(ST, 1, Rswrite { count: 5 }, "0b000000 a9 0100 05000000"),
        g(
            ST,
            1,
            Tsstat { id: 0x42 },
            "0f000000 aa 0100 4200000000000000",
        ),
        g(ST, 1, Rsstat { stat: S }, RSTAT_HEX_AB),
        g(
            ST,
            1,
            Tswstat {
                id: 0x42,
                valid: swstat_valid::MODE | swstat_valid::SIZE,
                attr: A,
                size: 0,
            },
            TSWSTAT_HEX,
        ),
        g(ST, 1, Rswstat { stat: S }, RSTAT_HEX_AD),
        g(
            ST,
            1,
            Tsdelete { id: 0x42 },
            "0f000000 ae 0100 4200000000000000",
        ),
        g(ST, 1, Rsdelete {}, "07000000 af 0100"),
        g(
            ST,
            1,
            Tssync { id: 0x42 },
            "0f000000 b0 0100 4200000000000000",
        ),
        g(ST, 1, Rssync {}, "07000000 b1 0100"),
    ]
}

const TSCREATE_HEX: &str = "
    34000000 a2 0100      # size=52 Tscreate
    4200000000000000      # id=0x42
    00 a4010000 e8030000 e8030000 0100000000000000 02000000 0300000000000000 04000000 # attr A";

// ObjStat S = id[8] attr[37] size[8] ctime_sec[8] ctime_nsec[4] blocks[8]; frame size 80.
macro_rules! rstat_hex {
    ($ty:literal) => {
        concat!(
            "50000000 ", $ty, " 0100 # size=80\n",
            "4200000000000000 # id=0x42\n",
            "00 a4010000 e8030000 e8030000 0100000000000000 02000000 0300000000000000 04000000 # attr A\n",
            "0500000000000000 0600000000000000 07000000 0800000000000000 # size ctime blocks"
        )
    };
}
const RSTAT_HEX_A3: &str = rstat_hex!("a3");
const RSTAT_HEX_A5: &str = rstat_hex!("a5");
const RSTAT_HEX_AB: &str = rstat_hex!("ab");
const RSTAT_HEX_AD: &str = rstat_hex!("ad");
const TSWSTAT_HEX: &str = "
    40000000 ac 0100      # size=64 Tswstat
    4200000000000000 21000000 # id=0x42 valid=MODE|SIZE
    00 a4010000 e8030000 e8030000 0100000000000000 02000000 0300000000000000 04000000 # attr A
    0000000000000000      # size=0";
