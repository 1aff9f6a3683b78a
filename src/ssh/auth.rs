//! Token authentication. The only way to obtain an [`AuthorizedSession`] is
//! a successful journal redemption, so code that spawns processes can take
//! one as proof that the person presented a live token for this user.

use std::net::SocketAddr;
use std::time::Instant;

use crate::journal::{Db, Grant, Redeemed};
use crate::token;

/// Only this module can name it, so only [`redeem`] can build an
/// [`AuthorizedSession`], even elsewhere in this crate.
#[derive(Debug)]
struct Proof;

/// Proof of a redeemed token. Its fields can be read anywhere, but it can be
/// built only here (the private `Proof` field), by [`redeem`], around the
/// journal's [`Redeemed`] (which only the journal builds, and which `exec`
/// asks for before it plans a process).
#[derive(Debug)]
pub struct AuthorizedSession {
    /// The session's id, what the token grants, and for how long.
    pub redeemed: Redeemed,
    pub login_user: String,
    pub client_addr: SocketAddr,
    /// When the redemption happened, on the monotonic clock.
    pub started: Instant,
    _proof: Proof,
}

impl AuthorizedSession {
    pub fn id(&self) -> &str {
        &self.redeemed.id
    }

    /// The profile a command grant runs under (empty for a tunnel).
    pub fn profile(&self) -> &str {
        match &self.redeemed.grant {
            Grant::Command { profile, .. } => profile,
            Grant::Tunnel { .. } => "",
        }
    }

    pub fn is_tunnel(&self) -> bool {
        matches!(self.redeemed.grant, Grant::Tunnel { .. })
    }
}

/// What became of a presented token.
pub enum Redemption {
    Granted(AuthorizedSession),
    /// Unknown, used, expired, canceled, for another user, or malformed:
    /// all alike, so a client learns nothing from how it failed.
    Refused,
    /// The journal could not be asked: nothing was decided, and the token
    /// (if it is one) is not spent.
    Unavailable,
}

/// Redeems `presented` for `user`.
pub async fn redeem(db: &Db, user: &str, presented: &str, peer: SocketAddr) -> Redemption {
    // Malformed answers are hashed and looked up all the same: same work, same answer.
    let hash = token::hash(presented);
    let login_user = user.to_string();
    let addr = peer.to_string();
    let started = Instant::now();
    let result = db.call(move |j| j.redeem(&hash, &login_user, &addr)).await;
    let outcome = match &result {
        Ok(Some(_)) => "granted",
        Ok(None) => "refused",
        Err(_) => "unavailable",
    };
    crate::metrics::get()
        .redemption
        .get_or_create(&crate::metrics::ResultLabel { result: outcome })
        .observe(crate::metrics::seconds(started.elapsed()));
    match result {
        Ok(Some(redeemed)) => Redemption::Granted(AuthorizedSession {
            redeemed,
            login_user: user.to_string(),
            client_addr: peer,
            started,
            _proof: Proof,
        }),
        Ok(None) => {
            // One stable line per failure, for fail2ban (etc/fail2ban):
            // nothing after the port, the user name made printable.
            tracing::info!(
                "Failed token for {} from {} port {}",
                crate::text::printable(user, 64).replace(' ', "?"),
                peer.ip(),
                peer.port()
            );
            Redemption::Refused
        }
        Err(e) => {
            tracing::error!(%peer, user, error = %e, "journal unavailable; refusing login");
            Redemption::Unavailable
        }
    }
}
