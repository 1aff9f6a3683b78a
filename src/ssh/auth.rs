//! Token authentication. The only way to obtain an [`AuthorizedSession`] is
//! a successful journal redemption, so code that spawns processes can take
//! one as proof that the person presented a live token for this user.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::journal::Db;
use crate::token;

/// Only this module can name it, so only [`redeem`] can build an
/// [`AuthorizedSession`], even elsewhere in this crate.
#[derive(Debug)]
struct Proof;

/// Proof of a redeemed token. Its fields can be read anywhere, but it can be
/// built only here (the private `Proof` field), by [`redeem`].
#[derive(Debug)]
pub struct AuthorizedSession {
    pub id: String,
    pub profile: String,
    pub command: Option<String>,
    pub login_user: String,
    pub client_addr: SocketAddr,
    /// When the redemption happened, on the monotonic clock.
    pub started: Instant,
    pub max_duration: Duration,
    /// A tunnel session: the only target it may reach, and how many
    /// forwarded connections may be open at once.
    pub target: Option<String>,
    pub connection_limit: Option<u32>,
    _proof: Proof,
}

/// Redeems `presented` for `user`. Every kind of failure (unknown, used,
/// expired, canceled token, wrong user, malformed answer, journal error)
/// gives the same `None`, so a client learns nothing from how it failed.
pub async fn redeem(
    db: &Db,
    user: &str,
    presented: &str,
    peer: SocketAddr,
) -> Option<AuthorizedSession> {
    // Malformed answers are hashed and looked up all the same: same work, same answer.
    let hash = token::hash(presented);
    let login_user = user.to_string();
    let addr = peer.to_string();
    let started = Instant::now();
    let result = db.call(move |j| j.redeem(&hash, &login_user, &addr)).await;
    match result {
        Ok(Some(r)) => Some(AuthorizedSession {
            id: r.id,
            profile: r.profile,
            command: r.command,
            login_user: user.to_string(),
            client_addr: peer,
            started,
            max_duration: r.max_duration,
            target: r.target,
            connection_limit: r.connection_limit,
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
            None
        }
        Err(e) => {
            tracing::error!(%peer, user, error = %e, "journal unavailable; refusing login");
            None
        }
    }
}
