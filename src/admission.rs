//! Admission control at accept, before any cryptography, after OpenSSH's
//! `MaxStartups`, `PerSourceMaxStartups`, `PerSourceNetBlockSize` and
//! `PerSourcePenalties`: how many connections may be unauthenticated at
//! once, in all and per source netblock, and which sources are refused for
//! a while because their connections failed to authenticate, never tried,
//! or outstayed the login grace time.
//!
//! It decides from the peer's address alone and never reads a byte. Its
//! state lives in this process's memory: each bastion of several keeps its
//! own penalties. Pure logic with no I/O, so the config can name its types
//! and the accept loop and the connection task (`ssh`) call it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `max_startups = "start:rate:full"` (OpenSSH's semantics): below `start`
/// pending connections every connection is admitted; from `start` on one
/// is refused with probability `rate`%, rising linearly to 100% at `full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxStartups {
    pub start: u32,
    pub rate: u32,
    pub full: u32,
}

impl MaxStartups {
    /// `N` (refuse from N on) or `start:rate:full`.
    pub fn parse(s: &str) -> Result<MaxStartups, String> {
        let nums: Result<Vec<u32>, _> = s.split(':').map(|p| p.trim().parse::<u32>()).collect();
        let bad = || format!("\"{s}\" is not N or start:rate:full (e.g. \"10:30:100\")");
        let m = match nums.map_err(|_| bad())?.as_slice() {
            [n] => MaxStartups {
                start: *n,
                rate: 100,
                full: *n,
            },
            [start, rate, full] => MaxStartups {
                start: *start,
                rate: *rate,
                full: *full,
            },
            _ => return Err(bad()),
        };
        if m.start == 0 || m.full == 0 {
            return Err(format!(
                "\"{s}\": the numbers of connections must be at least 1"
            ));
        }
        if m.rate > 100 {
            return Err(format!("\"{s}\": the rate is a percentage, at most 100"));
        }
        if m.full < m.start {
            return Err(format!("\"{s}\": full must not be less than start"));
        }
        if m.full > 1_000_000 {
            return Err(format!("\"{s}\": at most 1000000 connections"));
        }
        Ok(m)
    }

    /// The chance in percent that a new connection is refused while
    /// `pending` are unauthenticated.
    pub fn drop_percent(&self, pending: u32) -> u32 {
        if pending < self.start {
            0
        } else if pending >= self.full || self.rate == 100 {
            100
        } else {
            self.rate + (100 - self.rate) * (pending - self.start) / (self.full - self.start)
        }
    }
}

/// How many leading bits of an address make a source (`"32:128"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Netblock {
    pub v4: u8,
    pub v6: u8,
}

impl Netblock {
    pub fn parse(s: &str) -> Result<Netblock, String> {
        let bad = || format!("\"{s}\" is not IPV4BITS[:IPV6BITS] (e.g. \"32:128\" or \"24:64\")");
        let parts: Vec<&str> = s.split(':').collect();
        let v4: u8 = parts
            .first()
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(bad)?;
        let v6: u8 = match parts.get(1) {
            Some(p) => p.trim().parse().map_err(|_| bad())?,
            None => 128,
        };
        if parts.len() > 2 || v4 == 0 || v4 > 32 || v6 == 0 || v6 > 128 {
            return Err(bad());
        }
        Ok(Netblock { v4, v6 })
    }

    /// The source `ip` belongs to.
    pub fn source(&self, ip: IpAddr) -> Source {
        Source(mask(canonical(ip), self.v4, self.v6))
    }
}

impl Default for Netblock {
    fn default() -> Self {
        Netblock { v4: 32, v6: 128 }
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 address it carries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn mask(ip: IpAddr, v4: u8, v6: u8) -> (IpAddr, u8) {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a) & (u32::MAX.checked_shl(32 - v4 as u32).unwrap_or(0));
            (IpAddr::V4(bits.into()), v4)
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a) & (u128::MAX.checked_shl(128 - v6 as u32).unwrap_or(0));
            (IpAddr::V6(bits.into()), v6)
        }
    }
}

/// A source netblock: the masked address and its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source((IpAddr, u8));

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (ip, bits) = self.0;
        write!(f, "{ip}/{bits}")
    }
}

/// A network given as `ADDR` or `ADDR/BITS`, for the exempt list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    bits: u8,
}

impl Network {
    pub fn parse(s: &str) -> Result<Network, String> {
        let bad = || format!("\"{s}\" is not an address or ADDRESS/BITS");
        let (a, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let addr = canonical(a.trim().parse::<IpAddr>().map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        if bits > max {
            return Err(bad());
        }
        Ok(Network { addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        if self.bits == 0 {
            return true;
        }
        mask(ip, self.bits.min(32), self.bits).0 == mask(self.addr, self.bits.min(32), self.bits).0
    }
}

/// `per_source_penalties`: how long a source is refused for each kind of
/// bad connection, accumulated up to `max`, enforced once above `min`.
#[derive(Debug, Clone, PartialEq)]
pub struct Penalties {
    pub enabled: bool,
    pub authfail: Duration,
    pub noauth: Duration,
    pub grace_exceeded: Duration,
    pub max: Duration,
    pub min: Duration,
    /// Sources tracked at most; the soonest to expire go first (OpenSSH's
    /// "permissive" overflow).
    pub max_sources: usize,
    pub exempt: Vec<Network>,
}

impl Default for Penalties {
    /// OpenSSH 9.8's defaults.
    fn default() -> Self {
        Penalties {
            enabled: true,
            authfail: Duration::from_secs(5),
            noauth: Duration::from_secs(1),
            grace_exceeded: Duration::from_secs(10),
            max: Duration::from_secs(600),
            min: Duration::from_secs(15),
            max_sources: 65_536,
            exempt: Vec::new(),
        }
    }
}

/// The whole policy, from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub max_startups: MaxStartups,
    /// Unauthenticated connections per source; `None`: no limit.
    pub per_source_max_startups: Option<u32>,
    pub netblock: Netblock,
    pub penalties: Penalties,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_startups: MaxStartups {
                start: 10,
                rate: 30,
                full: 100,
            },
            per_source_max_startups: Some(DEFAULT_PER_SOURCE),
            netblock: Netblock::default(),
            penalties: Penalties::default(),
        }
    }
}

/// Below `max_startups`'s start (10): one source alone never makes
/// everybody else's connections subject to random early drop.
pub const DEFAULT_PER_SOURCE: u32 = 8;

/// How a connection that did not authenticate ended, for its penalty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It authenticated: no penalty.
    Authenticated,
    /// It tried to authenticate and failed.
    AuthFailed,
    /// It closed without trying.
    NoAuth,
    /// The login grace time ended it.
    GraceExceeded,
}

impl Ending {
    /// A word for counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Authenticated => "authenticated",
            Ending::AuthFailed => "auth_failed",
            Ending::NoAuth => "no_auth",
            Ending::GraceExceeded => "grace_exceeded",
        }
    }
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Its source is penalized for this long yet.
    Penalty(Source, Duration),
    /// Its source has this many unauthenticated connections already.
    PerSource(Source, u32),
    /// This many connections are unauthenticated (random early drop).
    MaxStartups(u32),
}

impl Refusal {
    /// The one line written to the client before it is closed (as sshd
    /// writes one): nothing about the policy's numbers.
    pub fn line(&self) -> &'static [u8] {
        match self {
            Refusal::Penalty(..) => b"Not allowed at this time\r\n",
            Refusal::PerSource(..) | Refusal::MaxStartups(_) => {
                b"Too many unauthenticated connections; try again later\r\n"
            }
        }
    }

    /// A word for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Penalty(..) => "penalty",
            Refusal::PerSource(..) => "per_source_max_startups",
            Refusal::MaxStartups(_) => "max_startups",
        }
    }
}

#[derive(Debug)]
struct Penalty {
    expiry: Instant,
    active: bool,
    reason: &'static str,
}

#[derive(Default)]
struct State {
    pending: u32,
    per_source: HashMap<Source, u32>,
    penalties: HashMap<Source, Penalty>,
    refused: HashMap<&'static str, u64>,
}

/// Shared by every accept loop and connection of the daemon, across
/// reloads (a reload changes the policy, not what was counted).
pub struct Admission {
    policy: Mutex<Policy>,
    state: Mutex<State>,
}

/// A source that became penalized: what to record once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPenalty {
    pub source: Source,
    pub seconds: u64,
    pub reason: &'static str,
}

impl Admission {
    pub fn new(policy: Policy) -> Arc<Admission> {
        Arc::new(Admission {
            policy: Mutex::new(policy),
            state: Mutex::new(State::default()),
        })
    }

    /// Puts a reloaded config's policy in force for new connections.
    pub fn set_policy(&self, policy: Policy) {
        *lock(&self.policy) = policy;
    }

    fn policy(&self) -> Policy {
        lock(&self.policy).clone()
    }

    /// Decides on a new connection from `ip` at `now`; `roll` is a random
    /// number in 0..100 for the early drop. Admitted: a ticket that holds
    /// its place among the unauthenticated until dropped or authenticated.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant, roll: u32) -> Result<Ticket, Refusal> {
        let policy = self.policy();
        let source = policy.netblock.source(ip);
        let mut st = lock(&self.state);
        let refusal = (|| {
            if let Some(p) = st.penalties.get(&source) {
                if p.active && p.expiry > now {
                    return Some(Refusal::Penalty(source, p.expiry - now));
                }
            }
            let mine = st.per_source.get(&source).copied().unwrap_or(0);
            if let Some(max) = policy.per_source_max_startups {
                if mine >= max {
                    return Some(Refusal::PerSource(source, mine));
                }
            }
            if roll < policy.max_startups.drop_percent(st.pending) {
                return Some(Refusal::MaxStartups(st.pending));
            }
            None
        })();
        if let Some(r) = refusal {
            *st.refused.entry(r.kind()).or_default() += 1;
            return Err(r);
        }
        st.pending += 1;
        *st.per_source.entry(source).or_default() += 1;
        Ok(Ticket {
            admission: self.clone(),
            source,
            ip,
            held: true,
        })
    }

    /// Unauthenticated connections now (in all).
    pub fn pending(&self) -> u32 {
        lock(&self.state).pending
    }

    /// Connections refused so far, by kind.
    pub fn refused(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = lock(&self.state)
            .refused
            .iter()
            .map(|(k, n)| (*k, *n))
            .collect();
        v.sort();
        v
    }

    fn release(&self, source: Source) {
        let mut st = lock(&self.state);
        st.pending = st.pending.saturating_sub(1);
        if let Some(n) = st.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                st.per_source.remove(&source);
            }
        }
    }

    /// Adds the penalty a connection from `ip` earned by how it ended.
    /// Returns the penalty when this made its source refused (not yet
    /// refused before): that is worth one event, not one per connection.
    pub fn penalise(&self, ip: IpAddr, ending: Ending, now: Instant) -> Option<NewPenalty> {
        let policy = self.policy();
        let p = &policy.penalties;
        if !p.enabled || p.exempt.iter().any(|n| n.contains(ip)) {
            return None;
        }
        let (secs, reason) = match ending {
            Ending::Authenticated => return None,
            Ending::AuthFailed => (p.authfail, "failed authentication"),
            Ending::NoAuth => (p.noauth, "connections without attempting authentication"),
            Ending::GraceExceeded => (p.grace_exceeded, "exceeded login_grace_time"),
        };
        if secs.is_zero() {
            return None;
        }
        let source = policy.netblock.source(ip);
        let mut st = lock(&self.state);
        st.penalties.retain(|_, v| v.expiry > now);
        let became_active = match st.penalties.get_mut(&source) {
            None => {
                let active = secs > p.min;
                st.penalties.insert(
                    source,
                    Penalty {
                        expiry: now + secs,
                        active,
                        reason,
                    },
                );
                if st.penalties.len() > p.max_sources {
                    evict_soonest(&mut st.penalties, p.max_sources, source);
                }
                active
            }
            Some(e) => {
                let left = e.expiry.saturating_duration_since(now);
                e.expiry = now + (left + secs).min(p.max);
                e.reason = reason;
                if !e.active && e.expiry.saturating_duration_since(now) > p.min {
                    e.active = true;
                    true
                } else {
                    false
                }
            }
        };
        let e = st.penalties.get(&source)?;
        became_active.then(|| NewPenalty {
            source,
            seconds: e.expiry.saturating_duration_since(now).as_secs(),
            reason: e.reason,
        })
    }
}

/// Keeps at most `max` penalties, dropping those that expire soonest
/// (never `keep`, the one just added).
fn evict_soonest(penalties: &mut HashMap<Source, Penalty>, max: usize, keep: Source) {
    let mut by_expiry: Vec<(Instant, Source)> = penalties
        .iter()
        .filter(|(s, _)| **s != keep)
        .map(|(s, p)| (p.expiry, *s))
        .collect();
    by_expiry.sort_by_key(|(e, _)| *e);
    let excess = penalties.len().saturating_sub(max);
    for (_, s) in by_expiry.into_iter().take(excess) {
        penalties.remove(&s);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection's place among the unauthenticated ones: given back when
/// it authenticates or ends.
pub struct Ticket {
    admission: Arc<Admission>,
    source: Source,
    ip: IpAddr,
    held: bool,
}

impl Ticket {
    /// The connection authenticated: it no longer counts as pending.
    pub fn authenticated(&mut self) {
        if std::mem::take(&mut self.held) {
            self.admission.release(self.source);
        }
    }

    /// The connection is over: its place is given back and its ending
    /// earns its source's penalty, if any.
    pub fn end(mut self, ending: Ending) -> Option<NewPenalty> {
        self.authenticated();
        self.admission.penalise(self.ip, ending, Instant::now())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.authenticated();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn max_startups_reads_and_drops_as_openssh_documents() {
        let m = MaxStartups::parse("10:30:100").unwrap();
        assert_eq!(m.drop_percent(9), 0);
        assert_eq!(m.drop_percent(10), 30);
        assert_eq!(m.drop_percent(55), 65);
        assert_eq!(m.drop_percent(99), 99);
        assert_eq!(m.drop_percent(100), 100);
        let n = MaxStartups::parse("5").unwrap();
        assert_eq!((n.drop_percent(4), n.drop_percent(5)), (0, 100));
        for bad in [
            "",
            "10:30",
            "0",
            "10:130:100",
            "100:30:10",
            "a:b:c",
            "1:2:3:4",
        ] {
            assert!(MaxStartups::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sources_are_netblocks_and_mapped_addresses_are_ipv4() {
        let n = Netblock::parse("24:64").unwrap();
        assert_eq!(n.source(ip("10.1.2.3")), n.source(ip("10.1.2.200")));
        assert_ne!(n.source(ip("10.1.2.3")), n.source(ip("10.1.3.3")));
        assert_eq!(n.source(ip("::ffff:10.1.2.3")), n.source(ip("10.1.2.9")));
        assert_eq!(n.source(ip("2001:db8::1")).to_string(), "2001:db8::/64");
        assert_eq!(
            Netblock::default().source(ip("10.1.2.3")).to_string(),
            "10.1.2.3/32"
        );
        for bad in ["0", "33", "32:0", "32:129", "x", "1:2:3"] {
            assert!(Netblock::parse(bad).is_err(), "{bad}");
        }
        let net = Network::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.200.0.1")) && !net.contains(ip("11.0.0.1")));
        assert!(Network::parse("::1").unwrap().contains(ip("::1")));
        assert!(Network::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn pending_connections_are_capped_in_all_and_per_source_and_given_back() {
        let a = Admission::new(Policy {
            max_startups: MaxStartups::parse("3").unwrap(),
            per_source_max_startups: Some(2),
            ..Policy::default()
        });
        let now = Instant::now();
        let t1 = a.admit(ip("10.0.0.1"), now, 99).unwrap();
        let mut t2 = a.admit(ip("10.0.0.1"), now, 99).unwrap();
        assert!(matches!(
            a.admit(ip("10.0.0.1"), now, 99),
            Err(Refusal::PerSource(_, 2))
        ));
        let t3 = a.admit(ip("10.0.0.2"), now, 99).unwrap();
        assert!(matches!(
            a.admit(ip("10.0.0.3"), now, 0),
            Err(Refusal::MaxStartups(3))
        ));
        t2.authenticated();
        assert_eq!(a.pending(), 2);
        let _t4 = a.admit(ip("10.0.0.1"), now, 99).unwrap();
        drop((t1, t3));
        assert_eq!(a.pending(), 1);
        assert_eq!(
            a.refused(),
            vec![("max_startups", 1), ("per_source_max_startups", 1)]
        );
    }

    #[test]
    fn penalties_accumulate_activate_above_min_cap_at_max_and_expire() {
        let a = Admission::new(Policy::default());
        let src = ip("192.0.2.7");
        let t0 = Instant::now();
        // 5 s each: deferred until more than 15 s accrued.
        for _ in 0..3 {
            assert_eq!(a.penalise(src, Ending::AuthFailed, t0), None);
            assert!(a.admit(src, t0, 99).is_ok());
        }
        let p = a.penalise(src, Ending::AuthFailed, t0).unwrap();
        assert_eq!((p.seconds, p.reason), (20, "failed authentication"));
        assert!(
            matches!(a.admit(src, t0, 99), Err(Refusal::Penalty(_, d)) if d == Duration::from_secs(20))
        );
        // Once active, more penalties are not news; they stop at max.
        for _ in 0..500 {
            assert_eq!(a.penalise(src, Ending::GraceExceeded, t0), None);
        }
        assert!(
            matches!(a.admit(src, t0, 99), Err(Refusal::Penalty(_, d)) if d == Duration::from_secs(600))
        );
        // Other sources are not affected; it expires.
        assert!(a.admit(ip("192.0.2.8"), t0, 99).is_ok());
        assert!(a.admit(src, t0 + Duration::from_secs(601), 99).is_ok());
        // Authenticated connections earn nothing.
        assert_eq!(a.penalise(ip("192.0.2.9"), Ending::Authenticated, t0), None);
    }

    #[test]
    fn exempt_sources_and_disabled_penalties_are_never_refused() {
        let mut pol = Policy::default();
        pol.penalties.exempt = vec![Network::parse("192.0.2.0/24").unwrap()];
        let a = Admission::new(pol);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(a.penalise(ip("192.0.2.1"), Ending::GraceExceeded, t0), None);
        }
        assert!(a.admit(ip("192.0.2.1"), t0, 99).is_ok());
        let mut off = Policy::default();
        off.penalties.enabled = false;
        let b = Admission::new(off);
        for _ in 0..10 {
            b.penalise(ip("192.0.2.1"), Ending::GraceExceeded, t0);
        }
        assert!(b.admit(ip("192.0.2.1"), t0, 99).is_ok());
    }

    #[test]
    fn the_penalty_table_is_bounded_and_keeps_the_newest() {
        let mut pol = Policy::default();
        pol.penalties.max_sources = 3;
        let a = Admission::new(pol);
        let t0 = Instant::now();
        for i in 1..=5u8 {
            let at = t0 + Duration::from_millis(i as u64);
            a.penalise(IpAddr::from([192, 0, 2, i]), Ending::NoAuth, at);
        }
        assert_eq!(lock(&a.state).penalties.len(), 3);
        assert!(lock(&a.state)
            .penalties
            .contains_key(&Netblock::default().source(ip("192.0.2.5"))));
    }
}
