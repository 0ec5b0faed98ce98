//! How a release rolls out, as its publisher signed it (manifest format 2): which nodes
//! install it ([`Rollout::target`]), what must be installed before it
//! ([`Rollout::requires`]), and in which stages ([`Rollout::rings`], each started when the
//! ring before it met the [`Gate`]).
//!
//! This module holds the data, its text forms (what `p2pctl publish --target`, `--requires`,
//! `--rings` and `--gate` take) and its rules. What a node does with it is decided in
//! `scheduler::rollout`, one pure function that the daemon and the simulator both drive.
//!
//! # Selectors
//!
//! A selector is a comma-separated list of terms that must all hold:
//! `os=debian12,role!=atm,site=paris|lyon`. A term names a key, `=` or `!=`, and one or
//! more values separated by `|` (`key=a|b`: the key is one of them; `key!=a|b`: it is none
//! of them). The keys `site` and `region` are the node's site and region (from its
//! certificate in a fleet with a root); any other key is one of the node's labels, and a node
//! without that label fails `=` and passes `!=`. The empty selector takes every node.
//!
//! # Rings
//!
//! `canary: labels ring=0; pilot: 5%; broad: rest`: rings in order, `;`-separated, each
//! `NAME: labels SELECTOR`, `NAME: SHARE%` (a share of the targeted nodes, 0.1 % steps) or
//! `NAME: rest`, the last ring, which must be `rest`. A node belongs to the first ring that
//! takes it: a labels ring takes the nodes its selector matches; share rings take
//! consecutive slices of a hash of the node and the channel (the same nodes for every
//! version of a channel, different nodes for different channels), so `5%` then `10%` take
//! the slices [0, 5 %) and [5 %, 15 %).

use crate::manifest::is_valid_channel;
use crate::wire::valid_name;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Most terms in one selector.
pub const SELECTOR_TERMS_MAX: usize = 16;

/// Most values one term lists.
pub const TERM_VALUES_MAX: usize = 16;

/// Most requirements one release names: a patch that needs more than this many others
/// should be published with them as one release.
pub const REQUIRES_MAX: usize = 16;

/// Most rings in a rollout: canary, pilot, a few waves and the rest.
pub const RINGS_MAX: usize = 8;

/// Longest soak a gate may ask: a week (a longer wait is a hold, not a rollout).
pub const SOAK_MAX_S: u32 = 7 * 86_400;

/// Keys a selector reads from the node itself rather than from its labels.
pub const PLACE_KEYS: [&str; 2] = ["site", "region"];

/// A release's rollout rules. The default (every node, nothing required, no rings) is what a
/// format-1 manifest means.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// Which nodes install the release; the others still fetch and relay it for their site.
    pub target: Selector,
    /// Releases each node must have installed before it installs this one.
    pub requires: Vec<Requirement>,
    /// Stages, in order; empty: every targeted node at once.
    pub rings: Vec<Ring>,
    /// What a ring must show before the next one starts (with no rings: the default).
    pub gate: Gate,
}

/// Terms that must all hold ([module docs](self)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Selector(pub Vec<Term>);

/// One term of a selector: `key=value|value` or `key!=value|value`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Term {
    /// `site`, `region` or a label's key.
    pub key: String,
    /// `=` (the key is one of the values) or `!=` (it is none of them).
    pub equal: bool,
    /// The values, at least one.
    pub values: Vec<String>,
}

/// `channel>=version`: some version of `channel` at least `min_version` installed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requirement {
    /// The channel.
    pub channel: String,
    /// The lowest version that satisfies it.
    pub min_version: u64,
}

/// One stage of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    /// Its name, as `p2pctl fleet` shows it.
    pub name: String,
    /// Which nodes it takes.
    pub members: RingMembers,
}

/// Which nodes a ring takes (of those no earlier ring took).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RingMembers {
    /// Those its selector matches.
    Labels(Selector),
    /// The next slice of this many thousandths of the hash space.
    Share {
        /// Thousandths.
        permille: u16,
    },
    /// Every node left (the last ring).
    Rest,
}

/// What a ring must show before the next ring starts: at least `installed_min_permille` of
/// its nodes installed, at most `failed_max_permille` failed, and both for `soak_s` seconds.
/// A failure share above the limit halts every ring not yet started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    /// Thousandths of the ring's nodes that must have installed the release.
    pub installed_min_permille: u16,
    /// Thousandths of the ring's nodes that may have failed it.
    pub failed_max_permille: u16,
    /// How long the ring must have met the gate, seconds.
    pub soak_s: u32,
}

impl Default for Gate {
    /// `installed>=95%,failed<=1%,soak=2h`.
    fn default() -> Self {
        Self {
            installed_min_permille: 950,
            failed_max_permille: 10,
            soak_s: 2 * 3600,
        }
    }
}

/// A node as selectors see it.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// Its site.
    pub site: &'a str,
    /// Its region.
    pub region: &'a str,
    /// Its labels, sorted by key, keys distinct.
    pub labels: &'a [(String, String)],
}

impl Place<'_> {
    /// The value of `key` for this node: its site, region or label.
    pub fn get(&self, key: &str) -> Option<&str> {
        match key {
            "site" => Some(self.site),
            "region" => Some(self.region),
            _ => self
                .labels
                .binary_search_by(|(k, _)| k.as_str().cmp(key))
                .ok()
                .map(|i| self.labels[i].1.as_str()),
        }
    }
}

/// Why a rollout's text or its rules are wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {why}")]
pub struct RolloutError {
    /// Which part: `target`, `requires`, `rings` or `gate`.
    pub what: &'static str,
    /// What is wrong with it.
    pub why: String,
}

fn bad<T>(what: &'static str, why: impl Into<String>) -> Result<T, RolloutError> {
    Err(RolloutError {
        what,
        why: why.into(),
    })
}

impl Selector {
    /// Whether `place` passes every term.
    pub fn matches(&self, place: &Place<'_>) -> bool {
        self.0.iter().all(|t| {
            let is_one = place
                .get(&t.key)
                .is_some_and(|v| t.values.iter().any(|w| w == v));
            is_one == t.equal
        })
    }

    /// Whether it takes every node.
    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses `os=debian12,role!=atm,site=a|b` (empty or blank, or `every node` as the
    /// selector prints itself: every node).
    pub fn parse(text: &str, what: &'static str) -> Result<Self, RolloutError> {
        let text = text.trim();
        if text.is_empty() || text == EVERY_NODE {
            return Ok(Self::default());
        }
        let mut terms = Vec::new();
        for term in text.split(',') {
            let term = term.trim();
            let (key, equal, values) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return bad(what, format!("{term:?} is not key=value or key!=value"));
            };
            terms.push(Term {
                key: key.trim().to_owned(),
                equal,
                values: values.split('|').map(|v| v.trim().to_owned()).collect(),
            });
        }
        let s = Self(terms);
        s.validate(what)?;
        Ok(s)
    }

    /// Checks the limits and names.
    pub fn validate(&self, what: &'static str) -> Result<(), RolloutError> {
        if self.0.len() > SELECTOR_TERMS_MAX {
            return bad(what, format!("more than {SELECTOR_TERMS_MAX} terms"));
        }
        for t in &self.0 {
            if !valid_name(&t.key) {
                return bad(what, format!("{:?} is not a label key", t.key));
            }
            if t.values.is_empty() || t.values.len() > TERM_VALUES_MAX {
                return bad(what, format!("{}: 1 to {TERM_VALUES_MAX} values", t.key));
            }
            if let Some(v) = t.values.iter().find(|v| !valid_name(v)) {
                return bad(what, format!("{}: {v:?} is not a label value", t.key));
            }
        }
        Ok(())
    }
}

/// How the selector that takes every node prints itself (and parses).
const EVERY_NODE: &str = "every node";

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(EVERY_NODE);
        }
        for (i, t) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let op = if t.equal { "=" } else { "!=" };
            write!(f, "{sep}{}{op}{}", t.key, t.values.join("|"))?;
        }
        Ok(())
    }
}

impl Requirement {
    /// Parses `security/openssl>=3` (or `security/openssl`: any version).
    pub fn parse(text: &str) -> Result<Self, RolloutError> {
        let text = text.trim();
        let (channel, min_version) = match text.split_once(">=") {
            Some((c, v)) => match v.trim().parse::<u64>() {
                Ok(v) => (c.trim(), v),
                Err(_) => return bad("requires", format!("{text:?}: {v:?} is not a version")),
            },
            None => (text, 0),
        };
        let r = Self {
            channel: channel.to_owned(),
            min_version,
        };
        r.validate()?;
        Ok(r)
    }

    /// Parses a comma-separated list (empty: none).
    pub fn parse_list(text: &str) -> Result<Vec<Self>, RolloutError> {
        text.split(',')
            .filter(|t| !t.trim().is_empty())
            .map(Self::parse)
            .collect()
    }

    fn validate(&self) -> Result<(), RolloutError> {
        if !is_valid_channel(&self.channel) {
            return bad("requires", format!("{:?} is not a channel", self.channel));
        }
        Ok(())
    }

    /// Whether version `version` of `channel` satisfies it.
    pub fn satisfied_by(&self, channel: &str, version: u64) -> bool {
        channel == self.channel && version >= self.min_version
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}>={}", self.channel, self.min_version)
    }
}

/// Reads `5%` or `0.5%` as thousandths.
fn parse_percent(text: &str, what: &'static str) -> Result<u16, RolloutError> {
    let Some(number) = text.trim().strip_suffix('%') else {
        return bad(what, format!("{text:?} is not a percentage"));
    };
    let (whole, tenth) = match number.trim().split_once('.') {
        Some((w, t)) if t.len() == 1 => (w, t),
        Some(_) => return bad(what, format!("{text:?}: at most one decimal")),
        None => (number.trim(), "0"),
    };
    match (whole.parse::<u16>(), tenth.parse::<u16>()) {
        (Ok(w), Ok(t)) if w <= 100 && (w < 100 || t == 0) => Ok(w * 10 + t),
        _ => bad(
            what,
            format!("{text:?} is not a percentage from 0% to 100%"),
        ),
    }
}

/// Thousandths as a percentage with at most one decimal: `50` is `5%`, `125` is `12.5%`.
pub fn permille_text(p: u16) -> String {
    if p % 10 == 0 {
        format!("{}%", p / 10)
    } else {
        format!("{}.{}%", p / 10, p % 10)
    }
}

/// Reads `2h`, `30m`, `45s`, `1d` or a bare number of seconds.
fn parse_duration_s(text: &str, what: &'static str) -> Result<u32, RolloutError> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return bad(what, format!("{text:?}: the unit must be s, m, h or d")),
    };
    number
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&s| s <= SOAK_MAX_S)
        .map_or_else(
            || bad(what, format!("{text:?} is not a duration up to 7d")),
            Ok,
        )
}

fn show_duration(s: u32) -> String {
    match s {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl Ring {
    /// Parses `canary: labels ring=0; pilot: 5%; broad: rest`.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, RolloutError> {
        let mut rings = Vec::new();
        for part in text.split(';').filter(|p| !p.trim().is_empty()) {
            let Some((name, spec)) = part.split_once(':') else {
                return bad("rings", format!("{:?} is not NAME: SPEC", part.trim()));
            };
            let spec = spec.trim();
            let members = if spec == "rest" {
                RingMembers::Rest
            } else if let Some(sel) = spec.strip_prefix("labels") {
                RingMembers::Labels(Selector::parse(sel, "rings")?)
            } else {
                RingMembers::Share {
                    permille: parse_percent(spec, "rings")?,
                }
            };
            rings.push(Self {
                name: name.trim().to_owned(),
                members,
            });
        }
        validate_rings(&rings)?;
        Ok(rings)
    }
}

impl fmt::Display for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.members {
            RingMembers::Labels(s) => write!(f, "{}: labels {s}", self.name),
            RingMembers::Share { permille } => {
                write!(f, "{}: {}", self.name, permille_text(*permille))
            }
            RingMembers::Rest => write!(f, "{}: rest", self.name),
        }
    }
}

fn validate_rings(rings: &[Ring]) -> Result<(), RolloutError> {
    if rings.is_empty() {
        return Ok(());
    }
    if rings.len() < 2 || rings.len() > RINGS_MAX {
        return bad("rings", format!("2 to {RINGS_MAX} rings"));
    }
    let mut share = 0u32;
    for (i, r) in rings.iter().enumerate() {
        if !valid_name(&r.name) {
            return bad("rings", format!("{:?} is not a ring name", r.name));
        }
        if rings[..i].iter().any(|o| o.name == r.name) {
            return bad("rings", format!("two rings are named {:?}", r.name));
        }
        let last = i + 1 == rings.len();
        match &r.members {
            RingMembers::Rest if !last => {
                return bad(
                    "rings",
                    format!("{}: only the last ring is the rest", r.name),
                );
            }
            RingMembers::Rest => {}
            _ if last => return bad("rings", "the last ring must be the rest"),
            RingMembers::Labels(s) => {
                if s.is_all() {
                    return bad(
                        "rings",
                        format!("{}: a labels ring needs a selector", r.name),
                    );
                }
                s.validate("rings")?;
            }
            RingMembers::Share { permille } => {
                if *permille == 0 {
                    return bad(
                        "rings",
                        format!("{}: a share ring takes more than 0%", r.name),
                    );
                }
                share += u32::from(*permille);
            }
        }
    }
    if share > 1000 {
        return bad(
            "rings",
            format!("the shares add up to {}", permille_text(share as u16)),
        );
    }
    Ok(())
}

impl Gate {
    /// Parses `installed>=95%,failed<=1%,soak=2h`; a part left out keeps its default.
    pub fn parse(text: &str) -> Result<Self, RolloutError> {
        let mut gate = Self::default();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("installed>=") {
                gate.installed_min_permille = parse_percent(v, "gate")?;
            } else if let Some(v) = part.strip_prefix("failed<=") {
                gate.failed_max_permille = parse_percent(v, "gate")?;
            } else if let Some(v) = part.strip_prefix("soak=") {
                gate.soak_s = parse_duration_s(v, "gate")?;
            } else {
                return bad(
                    "gate",
                    format!("{part:?}: expected installed>=N%, failed<=N% or soak=DURATION"),
                );
            }
        }
        gate.validate()?;
        Ok(gate)
    }

    fn validate(&self) -> Result<(), RolloutError> {
        if self.installed_min_permille > 1000 || self.failed_max_permille > 1000 {
            return bad("gate", "shares are 0% to 100%");
        }
        if self.installed_min_permille == 0 {
            return bad(
                "gate",
                "installed>=0% would open every ring at once; publish --no-rings",
            );
        }
        if self.soak_s > SOAK_MAX_S {
            return bad("gate", "the soak is at most 7d");
        }
        Ok(())
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "installed>={},failed<={},soak={}",
            permille_text(self.installed_min_permille),
            permille_text(self.failed_max_permille),
            show_duration(self.soak_s)
        )
    }
}

impl Rollout {
    /// Checks every rule: limits, names, rings (the last is the rest, shares at most 100 %),
    /// and, without rings, the default gate (one encoding per meaning).
    pub fn validate(&self) -> Result<(), RolloutError> {
        self.target.validate("target")?;
        if self.requires.len() > REQUIRES_MAX {
            return bad("requires", format!("more than {REQUIRES_MAX} requirements"));
        }
        for (i, r) in self.requires.iter().enumerate() {
            r.validate()?;
            if self.requires[..i].iter().any(|o| o.channel == r.channel) {
                return bad("requires", format!("{} is required twice", r.channel));
            }
        }
        validate_rings(&self.rings)?;
        if self.rings.is_empty() && self.gate != Gate::default() {
            return bad("gate", "a gate without rings");
        }
        self.gate.validate()
    }

    /// Whether it is the default: every node, nothing required, no rings.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place<'a>(labels: &'a [(String, String)]) -> Place<'a> {
        Place {
            site: "paris",
            region: "emea",
            labels,
        }
    }

    /// Found by the `rollout` fuzz target: the empty selector printed "every node", which did
    /// not parse back.
    #[test]
    fn the_selector_of_every_node_prints_and_parses_back() {
        let every = Selector::parse("\n\n", "target").unwrap();
        assert!(every.is_all());
        assert_eq!(every.to_string(), "every node");
        assert_eq!(
            Selector::parse(&every.to_string(), "target").unwrap(),
            every
        );
    }

    #[test]
    fn selectors_parse_print_and_match() {
        let s =
            Selector::parse(" os=debian12, role!=atm|kiosk ,site=paris|lyon", "target").unwrap();
        assert_eq!(s.to_string(), "os=debian12,role!=atm|kiosk,site=paris|lyon");
        assert_eq!(Selector::parse(&s.to_string(), "target").unwrap(), s);
        let labels = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            let mut v: Vec<_> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            v.sort();
            v
        };
        let server = labels(&[("os", "debian12"), ("role", "server")]);
        let atm = labels(&[("os", "debian12"), ("role", "atm")]);
        let no_role = labels(&[("os", "debian12")]);
        let old = labels(&[("os", "debian11")]);
        assert!(s.matches(&place(&server)));
        assert!(!s.matches(&place(&atm)));
        assert!(s.matches(&place(&no_role)), "a missing label passes !=");
        assert!(!s.matches(&place(&old)));
        let elsewhere = Place {
            site: "nice",
            ..place(&server)
        };
        assert!(!s.matches(&elsewhere));
        assert!(Selector::parse("", "target").unwrap().matches(&place(&old)));
        assert!(
            Selector::parse("region=emea", "t")
                .unwrap()
                .matches(&place(&old))
        );
    }

    #[test]
    fn bad_selectors_are_refused_with_the_reason() {
        for (text, why) in [
            ("os", "is not key=value"),
            ("os=", "is not a label value"),
            ("o s=x", "is not a label key"),
            ("os=a||b", "is not a label value"),
        ] {
            let e = Selector::parse(text, "target").unwrap_err();
            assert!(e.to_string().contains(why), "{text}: {e}");
        }
        let many = vec!["a=b"; SELECTOR_TERMS_MAX + 1].join(",");
        assert!(Selector::parse(&many, "target").is_err());
    }

    #[test]
    fn requirements_parse() {
        let r = Requirement::parse_list("security/openssl>=3, base/libc").unwrap();
        assert_eq!(r[0].to_string(), "security/openssl>=3");
        assert_eq!(r[1].min_version, 0);
        assert!(r[0].satisfied_by("security/openssl", 4));
        assert!(!r[0].satisfied_by("security/openssl", 2));
        assert!(!r[0].satisfied_by("security/openssl2", 9));
        assert!(Requirement::parse("Bad Channel>=1").is_err());
        assert!(Requirement::parse("a>=x").is_err());
    }

    #[test]
    fn rings_and_gates_parse_and_are_checked() {
        let rings =
            Ring::parse_list("canary: labels ring=0; pilot: 5%; wave: 12.5%; broad: rest").unwrap();
        assert_eq!(rings.len(), 4);
        assert_eq!(rings[2].members, RingMembers::Share { permille: 125 });
        let shown: Vec<String> = rings.iter().map(ToString::to_string).collect();
        assert_eq!(Ring::parse_list(&shown.join("; ")).unwrap(), rings);
        for (text, why) in [
            ("a: 5%", "2 to"),
            ("a: 5%; b: 10%", "last ring must be the rest"),
            ("a: rest; b: rest", "only the last"),
            ("a: 60%; b: 50%; c: rest", "add up"),
            ("a: 0%; c: rest", "more than 0%"),
            ("a: 5%; a: rest", "two rings"),
            ("a: labels; b: rest", "needs a selector"),
            ("a 5%; b: rest", "NAME: SPEC"),
            ("a: 5.25%; b: rest", "one decimal"),
        ] {
            let e = Ring::parse_list(text).unwrap_err();
            assert!(e.to_string().contains(why), "{text}: {e}");
        }
        let g = Gate::parse("installed>=90%, soak=30m").unwrap();
        assert_eq!(g.installed_min_permille, 900);
        assert_eq!(g.failed_max_permille, 10);
        assert_eq!(g.soak_s, 1800);
        assert_eq!(g.to_string(), "installed>=90%,failed<=1%,soak=30m");
        assert_eq!(Gate::parse(&g.to_string()).unwrap(), g);
        assert!(Gate::parse("soak=8d").is_err());
        assert!(Gate::parse("installed>=0%").is_err());
        assert!(Gate::parse("failed<=101%").is_err());
        assert!(Gate::parse("speed=2").is_err());
    }

    #[test]
    fn a_rollout_is_one_encoding_per_meaning() {
        let mut r = Rollout::default();
        assert!(r.validate().is_ok() && r.is_default());
        r.gate.soak_s = 60;
        assert!(r.validate().is_err(), "a gate without rings");
        r.rings = Ring::parse_list("a: 1%; b: rest").unwrap();
        assert!(r.validate().is_ok());
        r.requires = Requirement::parse_list("x>=1,x>=2").unwrap();
        assert!(r.validate().unwrap_err().to_string().contains("twice"));
    }
}
