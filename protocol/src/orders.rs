//! The fleet's standing orders: what operators told every node about rollouts, signed by an
//! operator key of the fleet root (`p2pctl rollout pause|resume|abort`, `p2pctl rollback
//! CHANNEL --to VERSION`, `p2pctl hold --fleet`).
//!
//! Like the revocation list ([`crate::revoke`]), the orders are one document, whole and
//! versioned under the root it was made under: each new one replaces the one before and
//! carries every order still in force, so a node that was away takes the newest and knows
//! everything; an older or equal version is never taken. A command is therefore idempotent:
//! issuing it twice leaves the same state, and a node that takes the document twice does
//! nothing the second time. Only the root's **operator** keys sign orders, not its CA or
//! publisher keys (Uptane's split: a stolen publisher key can sign a release but not push
//! it past a pause, and a stolen operator key can stop or roll back releases but not sign
//! one). The document spreads from node to node as the revocation list does (the hello and
//! [`crate::wire::Control::Trust`] carry its version; a peer behind asks with
//! [`crate::wire::Request::Orders`]).
//!
//! What the orders say, each read by every node for itself ([`Orders::stop_for`],
//! [`Orders::holds_for`], [`Orders::rollback_for`]):
//!
//! * **pause** a release: no node installs it until it is resumed;
//! * **resume** it: the pause is lifted, and a node whose install of it failed before the
//!   resume tries once more (after a fix, a halted rollout goes on as the failures turn
//!   into installs);
//! * **abort** it: no node installs it any more (final; publish a fixed version);
//! * **roll back** a channel to a version, for the nodes a selector takes: versions above it
//!   up to the newest known when the order was given are not installed, and a node running
//!   one switches `current` back to that version and applies it;
//! * **hold** a channel or a release on the nodes a selector takes, with a reason and an
//!   end: a fleet-wide exception, shown like a node's own hold.

use crate::codec;
use crate::envelope::SignatureBytes;
use crate::error::ManifestError;
use crate::ids::{PublisherKey, ReleaseId};
use crate::rollout::{Place, Selector};
use crate::root::Root;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

/// Version of the orders format this build reads and writes.
pub const ORDERS_FORMAT_VERSION: u16 = 1;

/// Domain separation for orders signatures.
pub const ORDERS_SIGNING_CONTEXT: &[u8] = b"p2pd/orders/v1\n";

/// Most release orders (pause, resume, abort) kept: a year of 300 releases a month is
/// 3,600, of which few are ever paused; the oldest are dropped first when it is full.
pub const RELEASE_ORDERS_MAX: usize = 1024;

/// Most channel rollbacks kept (one per channel).
pub const ROLLBACKS_MAX: usize = 256;

/// Most fleet-wide holds in force at once.
pub const FLEET_HOLDS_MAX: usize = 256;

/// Longest reason, in bytes: a sentence and a ticket number.
pub const ORDER_REASON_BYTES_MAX: usize = 200;

/// Longest fleet-wide hold, seconds (a year), as a node's own.
pub const FLEET_HOLD_DURATION_MAX_S: i64 = 366 * 86_400;

/// How long a release order is kept: after a year its release has long expired.
pub const RELEASE_ORDER_KEPT_S: i64 = 366 * 86_400;

/// Largest encoded signed orders: each entry is under 600 bytes (a selector of at most a
/// few hundred, a reason of [`ORDER_REASON_BYTES_MAX`]), and there are at most 1,536.
pub const ORDERS_BYTES_MAX: usize = 1 << 20;

/// What an operator told the fleet about one release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseCommand {
    /// No node installs it until resumed.
    Pause,
    /// The pause (or a halt, once the failures are fixed) is over: failed installs from
    /// before it are tried once more.
    Resume,
    /// No node installs it any more.
    Abort,
}

impl ReleaseCommand {
    /// Its name, as `p2pctl` takes and prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Abort => "abort",
        }
    }
}

/// The latest command for one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseOrder {
    /// The release.
    pub release: ReleaseId,
    /// The command.
    pub command: ReleaseCommand,
    /// When it was given, unix seconds.
    pub at_unix_s: i64,
    /// Why, as the operator gave it.
    pub reason: String,
}

/// A channel rolled back to a version for the nodes `target` takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// The channel.
    pub channel: String,
    /// The version nodes go back to.
    pub to_version: u64,
    /// The newest version rolled back: versions above `to_version` up to this one are not
    /// installed; a newer one (the fix) installs as usual.
    pub through_version: u64,
    /// The nodes it applies to.
    pub target: Selector,
    /// When it was given, unix seconds.
    pub at_unix_s: i64,
    /// Why.
    pub reason: String,
}

/// A fleet-wide install hold: a channel (and those under it) or a release, on the nodes
/// `target` takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetHold {
    /// A channel name or a release id (64 hex digits), as a node's own hold names it.
    pub what: String,
    /// The nodes it applies to.
    pub target: Selector,
    /// Why.
    pub reason: String,
    /// When it ends by itself, unix seconds.
    pub until_unix_s: i64,
    /// When it was given, unix seconds.
    pub at_unix_s: i64,
}

impl FleetHold {
    /// Whether it covers release `id` of `channel` (the same rule as a node's own hold).
    pub fn covers(&self, id: &ReleaseId, channel: &str) -> bool {
        self.what == id.to_hex() || crate::root::channel_in_scope(&self.what, channel)
    }
}

/// Why a node does not install a release, by order ([`Orders::stop_for`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Paused.
    Paused {
        /// The operator's reason.
        reason: String,
        /// When.
        at_unix_s: i64,
    },
    /// Aborted.
    Aborted {
        /// The operator's reason.
        reason: String,
        /// When.
        at_unix_s: i64,
    },
    /// Its channel was rolled back to an older version.
    RolledBack {
        /// The version the channel went back to.
        to_version: u64,
        /// The operator's reason.
        reason: String,
        /// When.
        at_unix_s: i64,
    },
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Paused { reason, at_unix_s } => {
                write!(f, "paused by an operator at unix {at_unix_s}: {reason}")
            }
            Self::Aborted { reason, at_unix_s } => {
                write!(f, "aborted by an operator at unix {at_unix_s}: {reason}")
            }
            Self::RolledBack {
                to_version,
                reason,
                at_unix_s,
            } => write!(
                f,
                "rolled back to v{to_version} by an operator at unix {at_unix_s}: {reason}"
            ),
        }
    }
}

/// The document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orders {
    /// [`ORDERS_FORMAT_VERSION`].
    pub format_version: u16,
    /// The fleet (the root's `fleet`).
    pub fleet: String,
    /// The version of the root it was made under.
    pub root_version: u64,
    /// 1 for the first, one more for each after (again from 1 under a newer root).
    pub version: u64,
    /// When it was made, unix seconds.
    pub issued_unix_s: i64,
    /// Release orders, sorted by release, one each.
    pub releases: Vec<ReleaseOrder>,
    /// Rollbacks, sorted by channel, one each.
    pub rollbacks: Vec<Rollback>,
    /// Fleet-wide holds, sorted by (what, target), one each.
    pub holds: Vec<FleetHold>,
}

/// Orders and their signer's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedOrders {
    /// The orders.
    pub orders: Orders,
    /// An operator key of the fleet root.
    pub signer: PublisherKey,
    /// ed25519 over [`ORDERS_SIGNING_CONTEXT`] and the orders' canonical bytes.
    pub signature: SignatureBytes,
}

/// Why orders were refused, or a command could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrdersError {
    /// They do not decode, or are too large.
    #[error("{0}")]
    Decode(#[from] ManifestError),
    /// A format this build does not read.
    #[error(
        "orders format version {0} is not supported (this build reads {ORDERS_FORMAT_VERSION})"
    )]
    UnsupportedFormat(u16),
    /// A rule of their structure is broken.
    #[error("fleet orders are not valid: {0}")]
    Invalid(String),
    /// For another fleet.
    #[error("fleet orders are for fleet {found:?}, not {expected:?}")]
    OtherFleet {
        /// This fleet.
        expected: String,
        /// Theirs.
        found: String,
    },
    /// Signed by a key that is not an operator of the root.
    #[error("fleet orders signed by {0}, which is not an operator key of the fleet root")]
    UnknownSigner(PublisherKey),
    /// The signature does not verify.
    #[error("fleet orders signature does not verify")]
    BadSignature,
    /// Not newer than those held.
    #[error("fleet orders v{found} are not newer than v{held}, held")]
    NotNewer {
        /// The version held.
        held: u64,
        /// The version offered.
        found: u64,
    },
    /// Made under a root newer than the one held.
    #[error("fleet orders made under root v{found}, newer than root v{held}, held")]
    NewerRoot {
        /// The root version held.
        held: u64,
        /// Theirs.
        found: u64,
    },
}

impl From<crate::root::Succession> for OrdersError {
    fn from(s: crate::root::Succession) -> Self {
        use crate::root::Succession;
        match s {
            Succession::OtherFleet { expected, found } => Self::OtherFleet { expected, found },
            Succession::NewerRoot { held, found } => Self::NewerRoot { held, found },
            Succession::NotNewer { held, found } => Self::NotNewer { held, found },
        }
    }
}

impl Orders {
    /// No orders for `fleet`, version 0: what a node holds before its first.
    pub fn empty(fleet: &str) -> Self {
        Self {
            format_version: ORDERS_FORMAT_VERSION,
            fleet: fleet.to_owned(),
            root_version: 0,
            version: 0,
            issued_unix_s: 0,
            releases: Vec::new(),
            rollbacks: Vec::new(),
            holds: Vec::new(),
        }
    }

    /// Checks its own rules: format, sorted distinct entries, bounded counts and reasons,
    /// valid selectors and channels.
    pub fn validate(&self) -> Result<(), OrdersError> {
        if self.format_version != ORDERS_FORMAT_VERSION {
            return Err(OrdersError::UnsupportedFormat(self.format_version));
        }
        let bad = |why: String| Err(OrdersError::Invalid(why));
        if self.version == 0 {
            return bad("version 0 is the empty document every node starts with".into());
        }
        if self.releases.len() > RELEASE_ORDERS_MAX
            || self.rollbacks.len() > ROLLBACKS_MAX
            || self.holds.len() > FLEET_HOLDS_MAX
        {
            return bad("more entries than the limits allow".into());
        }
        if self
            .releases
            .windows(2)
            .any(|w| w[0].release >= w[1].release)
        {
            return bad("release orders must be sorted by release, each once".into());
        }
        if self
            .rollbacks
            .windows(2)
            .any(|w| w[0].channel >= w[1].channel)
        {
            return bad("rollbacks must be sorted by channel, each once".into());
        }
        if self
            .holds
            .windows(2)
            .any(|w| hold_key(&w[0]) >= hold_key(&w[1]))
        {
            return bad("holds must be sorted by what and target, each once".into());
        }
        let reasons = self
            .releases
            .iter()
            .map(|o| &o.reason)
            .chain(self.rollbacks.iter().map(|r| &r.reason))
            .chain(self.holds.iter().map(|h| &h.reason));
        for reason in reasons {
            if reason.len() > ORDER_REASON_BYTES_MAX {
                return bad(format!(
                    "a reason is longer than {ORDER_REASON_BYTES_MAX} bytes"
                ));
            }
        }
        for r in &self.rollbacks {
            if !crate::manifest::is_valid_channel(&r.channel) {
                return bad(format!("rollback of {:?}: not a channel name", r.channel));
            }
            if r.through_version <= r.to_version {
                return bad(format!(
                    "rollback of {} to v{} rolls nothing back (through v{})",
                    r.channel, r.to_version, r.through_version
                ));
            }
            r.target
                .validate("rollback target")
                .map_err(|e| OrdersError::Invalid(e.to_string()))?;
        }
        for h in &self.holds {
            let release = h.what.len() == 64 && h.what.bytes().all(|b| b.is_ascii_hexdigit());
            if !release && !crate::manifest::is_valid_channel(&h.what) {
                return bad(format!(
                    "hold of {:?}: neither a channel nor a release id",
                    h.what
                ));
            }
            h.target
                .validate("hold target")
                .map_err(|e| OrdersError::Invalid(e.to_string()))?;
        }
        Ok(())
    }

    /// Whether these replace `held`: made under a newer root, or the same one with a
    /// higher version.
    pub fn replaces(&self, held: &Self) -> bool {
        (self.root_version, self.version) > (held.root_version, held.version)
    }

    /// The order for release `id`, if any.
    pub fn release_order(&self, id: &ReleaseId) -> Option<&ReleaseOrder> {
        self.releases
            .binary_search_by(|o| o.release.cmp(id))
            .ok()
            .map(|i| &self.releases[i])
    }

    /// When release `id` was last resumed: a node whose install of it failed before then
    /// tries once more.
    pub fn resumed_at(&self, id: &ReleaseId) -> Option<i64> {
        self.release_order(id)
            .filter(|o| o.command == ReleaseCommand::Resume)
            .map(|o| o.at_unix_s)
    }

    /// The rollback of `channel` that applies to the node at `place`, if any.
    pub fn rollback_for(&self, channel: &str, place: &Place<'_>) -> Option<&Rollback> {
        self.rollbacks
            .binary_search_by(|r| r.channel.as_str().cmp(channel))
            .ok()
            .map(|i| &self.rollbacks[i])
            .filter(|r| r.target.matches(place))
    }

    /// Why the node at `place` must not install release `id` (`channel`, `version`) by
    /// order, if it must not: an abort or a pause of the release, or a rollback of its
    /// channel past its version.
    pub fn stop_for(
        &self,
        id: &ReleaseId,
        channel: &str,
        version: u64,
        place: &Place<'_>,
    ) -> Option<Stop> {
        if let Some(o) = self.release_order(id) {
            let (reason, at_unix_s) = (o.reason.clone(), o.at_unix_s);
            match o.command {
                ReleaseCommand::Abort => return Some(Stop::Aborted { reason, at_unix_s }),
                ReleaseCommand::Pause => return Some(Stop::Paused { reason, at_unix_s }),
                ReleaseCommand::Resume => {}
            }
        }
        self.rollback_for(channel, place)
            .filter(|r| version > r.to_version && version <= r.through_version)
            .map(|r| Stop::RolledBack {
                to_version: r.to_version,
                reason: r.reason.clone(),
                at_unix_s: r.at_unix_s,
            })
    }

    /// The fleet-wide holds in force at `now_unix_s` on the node at `place`.
    pub fn holds_for<'a>(
        &'a self,
        place: &'a Place<'a>,
        now_unix_s: i64,
    ) -> impl Iterator<Item = &'a FleetHold> + 'a {
        self.holds
            .iter()
            .filter(move |h| now_unix_s < h.until_unix_s && h.target.matches(place))
    }

    /// The orders after these, under root `root_version`, with `release` given `command`
    /// (replacing its earlier order). Release orders older than [`RELEASE_ORDER_KEPT_S`]
    /// and the oldest beyond [`RELEASE_ORDERS_MAX`] are dropped.
    pub fn with_release(
        &self,
        root_version: u64,
        release: ReleaseId,
        command: ReleaseCommand,
        reason: &str,
        now_unix_s: i64,
    ) -> Self {
        let mut next = self.successor(root_version, now_unix_s);
        next.releases
            .retain(|o| o.release != release && o.at_unix_s >= now_unix_s - RELEASE_ORDER_KEPT_S);
        if next.releases.len() >= RELEASE_ORDERS_MAX {
            next.releases.sort_by_key(|o| o.at_unix_s);
            next.releases
                .drain(..=next.releases.len() - RELEASE_ORDERS_MAX);
        }
        next.releases.push(ReleaseOrder {
            release,
            command,
            at_unix_s: now_unix_s,
            reason: crate::wire::truncate_text(reason, ORDER_REASON_BYTES_MAX),
        });
        next.releases.sort_by_key(|o| o.release);
        next
    }

    /// The orders after these with `rollback` (replacing an earlier one of its channel);
    /// `None` when [`ROLLBACKS_MAX`] other channels are rolled back already.
    pub fn with_rollback(&self, root_version: u64, rollback: Rollback) -> Option<Self> {
        let mut next = self.successor(root_version, rollback.at_unix_s);
        next.rollbacks.retain(|r| r.channel != rollback.channel);
        if next.rollbacks.len() >= ROLLBACKS_MAX {
            return None;
        }
        let mut rollback = rollback;
        rollback.reason = crate::wire::truncate_text(&rollback.reason, ORDER_REASON_BYTES_MAX);
        next.rollbacks.push(rollback);
        next.rollbacks.sort_by(|a, b| a.channel.cmp(&b.channel));
        Some(next)
    }

    /// The orders after these without the rollback of `channel`: its versions install
    /// again. `None` if it has none.
    pub fn without_rollback(
        &self,
        root_version: u64,
        channel: &str,
        now_unix_s: i64,
    ) -> Option<Self> {
        self.rollbacks.iter().find(|r| r.channel == channel)?;
        let mut next = self.successor(root_version, now_unix_s);
        next.rollbacks.retain(|r| r.channel != channel);
        Some(next)
    }

    /// The orders after these with `hold` (replacing one of the same what and target),
    /// leaving out holds that ended; `None` when [`FLEET_HOLDS_MAX`] are in force.
    pub fn with_hold(&self, root_version: u64, hold: FleetHold) -> Option<Self> {
        let now = hold.at_unix_s;
        let mut next = self.successor(root_version, now);
        let key = hold_key(&hold);
        next.holds
            .retain(|h| h.until_unix_s > now && hold_key(h) != key);
        if next.holds.len() >= FLEET_HOLDS_MAX {
            return None;
        }
        let mut hold = hold;
        hold.reason = crate::wire::truncate_text(&hold.reason, ORDER_REASON_BYTES_MAX);
        next.holds.push(hold);
        next.holds.sort_by_key(hold_key);
        Some(next)
    }

    /// The orders after these without the fleet-wide holds of `what` (any target); `None`
    /// if there is none.
    pub fn without_hold(&self, root_version: u64, what: &str, now_unix_s: i64) -> Option<Self> {
        self.holds.iter().find(|h| h.what == what)?;
        let mut next = self.successor(root_version, now_unix_s);
        next.holds
            .retain(|h| h.what != what && h.until_unix_s > now_unix_s);
        Some(next)
    }

    fn successor(&self, root_version: u64, now_unix_s: i64) -> Self {
        Self {
            format_version: ORDERS_FORMAT_VERSION,
            fleet: self.fleet.clone(),
            root_version,
            version: crate::root::next_version((self.root_version, self.version), root_version),
            issued_unix_s: now_unix_s,
            releases: self.releases.clone(),
            rollbacks: self.rollbacks.clone(),
            holds: self.holds.clone(),
        }
    }

    /// What changed from `before` to these, in words, one line per entry, for the audit log.
    pub fn changes_from(&self, before: &Self) -> Vec<String> {
        let mut out = Vec::new();
        for o in &self.releases {
            if before.release_order(&o.release) != Some(o) {
                out.push(format!(
                    "{} release {}: {}",
                    o.command.name(),
                    o.release.to_hex(),
                    o.reason
                ));
            }
        }
        for r in &self.rollbacks {
            if !before.rollbacks.contains(r) {
                out.push(format!(
                    "rollback {} to v{} (through v{}) for {}: {}",
                    r.channel,
                    r.to_version,
                    r.through_version,
                    shown(&r.target),
                    r.reason
                ));
            }
        }
        for r in &before.rollbacks {
            if !self.rollbacks.iter().any(|x| x.channel == r.channel) {
                out.push(format!("rollback of {} lifted", r.channel));
            }
        }
        for h in &self.holds {
            if !before.holds.contains(h) {
                out.push(format!(
                    "hold {} for {} until unix {}: {}",
                    h.what,
                    shown(&h.target),
                    h.until_unix_s,
                    h.reason
                ));
            }
        }
        for h in &before.holds {
            if !self.holds.iter().any(|x| hold_key(x) == hold_key(h)) {
                out.push(format!("hold {} for {} ended", h.what, shown(&h.target)));
            }
        }
        out
    }
}

fn shown(target: &Selector) -> String {
    if target.is_all() {
        "every node".into()
    } else {
        target.to_string()
    }
}

fn hold_key(h: &FleetHold) -> (String, String) {
    (h.what.clone(), h.target.to_string())
}

impl SignedOrders {
    /// Signs `orders` with `key`.
    pub fn sign(orders: Orders, key: &SigningKey) -> Self {
        let (signer, signature) = codec::sign_document(ORDERS_SIGNING_CONTEXT, &orders, key);
        Self {
            orders,
            signer,
            signature,
        }
    }

    /// The wire and store form.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes them (at most [`ORDERS_BYTES_MAX`]); nothing is verified yet.
    pub fn decode(bytes: &[u8]) -> Result<Self, OrdersError> {
        Ok(codec::decode::<Self, ORDERS_BYTES_MAX>(
            bytes,
            "fleet orders",
        )?)
    }

    /// Checks them under `root`: their rules, for the root's fleet, signed by an operator
    /// key of the root.
    pub fn verify(&self, root: &Root) -> Result<&Orders, OrdersError> {
        let o = &self.orders;
        o.validate()?;
        root.check_fleet(&o.fleet)?;
        if !root.operators.iter().any(|k| k.key == self.signer) {
            return Err(OrdersError::UnknownSigner(self.signer));
        }
        if !codec::document_verifies(ORDERS_SIGNING_CONTEXT, o, &self.signer, &self.signature) {
            return Err(OrdersError::BadSignature);
        }
        Ok(o)
    }

    /// Checks them under `root` as the successor of `held` (`None`: none held yet).
    pub fn verify_after(&self, root: &Root, held: Option<&Orders>) -> Result<&Orders, OrdersError> {
        let o = self.verify(root)?;
        root.check_succession(
            (o.root_version, o.version),
            held.map(|h| (h.root_version, h.version)),
        )?;
        Ok(o)
    }
}

#[cfg(test)]
mod tests;
