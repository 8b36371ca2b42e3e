//! Identifiers that cross the hypervisor boundary, as newtypes so that a domain id can never
//! be passed where a grant reference or a port is expected.

use std::fmt;

/// A Xen domain id (dom0 = 0). `domid_t` is 16 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomId(pub u16);

/// A grant reference issued by a granting domain (`grant_ref_t`, 32 bits). Only meaningful
/// together with the granting domain's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantRef(pub u32);

/// An event-channel port number, local to one domain (`evtchn_port_t`, 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EvtchnPort(pub u32);

/// A xenstore transaction id; [`TxId::NONE`] outside a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId(pub u32);

impl TxId {
    /// No transaction.
    pub const NONE: TxId = TxId(0);
}

macro_rules! display_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    )*};
}
display_inner!(DomId, GrantRef, EvtchnPort, TxId);

/// `enum xenbus_state` from `io/xenbus.h`, as written (decimal) in `.../state` nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum XenbusState {
    /// 0.
    Unknown,
    /// 1: both ends start here (the toolstack writes it).
    Initialising,
    /// 2: backend published its features and waits for the frontend.
    InitWait,
    /// 3: frontend published rings and event channels.
    Initialised,
    /// 4: ready.
    Connected,
    /// 5: shutting down.
    Closing,
    /// 6: shut down.
    Closed,
    /// 7.
    Reconfiguring,
    /// 8.
    Reconfigured,
}

impl XenbusState {
    /// The numeric value.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// Parses a state node's value (`"4"`, possibly with whitespace). Unknown numbers and
    /// garbage give `None`.
    pub fn parse(value: &[u8]) -> Option<XenbusState> {
        let s = std::str::from_utf8(value)
            .ok()?
            .trim_matches(|c: char| c.is_whitespace() || c == '\0');
        Some(match s.parse::<u32>().ok()? {
            0 => XenbusState::Unknown,
            1 => XenbusState::Initialising,
            2 => XenbusState::InitWait,
            3 => XenbusState::Initialised,
            4 => XenbusState::Connected,
            5 => XenbusState::Closing,
            6 => XenbusState::Closed,
            7 => XenbusState::Reconfiguring,
            8 => XenbusState::Reconfigured,
            _ => return None,
        })
    }
}

impl fmt::Display for XenbusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xenbus_state_parse_roundtrip_and_garbage() {
        for n in 0..=8u32 {
            let s = XenbusState::parse(n.to_string().as_bytes()).unwrap();
            assert_eq!(s.as_u32(), n);
        }
        assert_eq!(XenbusState::parse(b"4\n"), Some(XenbusState::Connected));
        assert_eq!(XenbusState::parse(b"9"), None);
        assert_eq!(XenbusState::parse(b"x"), None);
        assert_eq!(XenbusState::parse(b"\xff"), None);
    }
}
