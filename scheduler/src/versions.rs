//! Which versions of a channel a node fetches and installs: only the newest one counts.
//!
//! A node that learns several versions of a channel at once (it joined late, or was off
//! while they were published) must not fetch or install the old ones: a security patch's
//! version N+1 replaces N, and installing N first would run an obsolete apply command and
//! fetch bytes nobody needs. The rule, for the daemon and the simulator alike:
//!
//! * a version is **superseded** by the newest higher version of its channel that this node
//!   knows (verified), that has not failed, and that is not held back longer than it: it is
//!   not fetched, or its fetch stops, and it is never installed; it is reported
//!   `superseded`, never `failed`;
//! * of a channel's complete versions, only one that nothing supersedes is installed: so
//!   whatever order the downloads finish in, only the newest is installed.
//!
//! "Held back longer": a newer version waiting for its download window does not supersede
//! an older one that may download now, nor a complete one: an emergency v1 that downloads
//! outside the window is not stopped, nor kept from being installed, by a routine v2 that
//! must wait for it. Two versions that both wait, or both may download, are ranked by
//! version alone.
//!
//! A version that failed does not supersede: its channel's older versions go on. One that
//! was superseded stays so even if the version that superseded it fails later (a settled
//! state is never left); the next version published repairs that.

/// Where a known version of a channel stands, as this rule needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Being fetched now.
    Running,
    /// Waiting for its download window.
    Waiting,
    /// Every chunk is stored.
    Complete,
    /// Superseded by a newer version.
    Superseded,
    /// Its fetch failed.
    Failed,
}

impl Standing {
    /// Whether a newer version in this standing supersedes an older one in `older`.
    fn supersedes(self, older: Self) -> bool {
        match self {
            Self::Running | Self::Complete => true,
            Self::Waiting => older == Self::Waiting,
            Self::Superseded | Self::Failed => false,
        }
    }
}

/// The version that supersedes `version`, standing `own`, given the known versions of its
/// channel (`None`: nothing does; it is the one to fetch and install).
pub fn superseded_by(
    version: u64,
    own: Standing,
    known: impl IntoIterator<Item = (u64, Standing)>,
) -> Option<u64> {
    known
        .into_iter()
        .filter(|&(v, s)| v > version && s.supersedes(own))
        .map(|(v, _)| v)
        .max()
}

/// Of a channel's known versions, the one to install: the newest complete version that
/// nothing supersedes (`None`: none, for now).
pub fn to_install(known: &[(u64, Standing)]) -> Option<u64> {
    known
        .iter()
        .filter(|&&(v, s)| {
            s == Standing::Complete && superseded_by(v, s, known.iter().copied()).is_none()
        })
        .map(|&(v, _)| v)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Standing::*;

    #[test]
    fn a_late_joiner_fetches_only_the_newest_of_three() {
        // Versions 3, 6 and 7 learned together: the newest supersedes the others, whether
        // the window lets them download now or they all wait for it.
        for s in [Running, Waiting] {
            let known = [(3, s), (6, s), (7, s)];
            assert_eq!(superseded_by(3, s, known), Some(7));
            assert_eq!(superseded_by(6, s, known), Some(7));
            assert_eq!(superseded_by(7, s, known), None);
        }
    }

    #[test]
    fn only_the_newest_complete_version_is_installed_whatever_finished_first() {
        // v3 finished before v7: v7 is still being fetched, so nothing is installed yet.
        assert_eq!(to_install(&[(3, Complete), (7, Running)]), None);
        assert_eq!(to_install(&[(3, Complete), (7, Complete)]), Some(7));
        assert_eq!(to_install(&[(3, Superseded), (7, Complete)]), Some(7));
        assert_eq!(to_install(&[(5, Complete)]), Some(5));
    }

    #[test]
    fn a_newer_version_that_waits_does_not_hold_back_one_that_may_go() {
        // An emergency v1 downloads outside the window; the routine v2 waits for it.
        assert_eq!(superseded_by(1, Running, [(2, Waiting)]), None);
        // Complete, v1 is installed while v2 waits.
        assert_eq!(to_install(&[(1, Complete), (2, Waiting)]), Some(1));
        // A routine v1 that waits is superseded by an emergency v2 that goes.
        assert_eq!(superseded_by(1, Waiting, [(2, Running)]), Some(2));
    }

    #[test]
    fn a_failed_or_superseded_version_supersedes_nothing() {
        let known = [(3, Complete), (7, Failed)];
        assert_eq!(superseded_by(3, Complete, known), None);
        assert_eq!(to_install(&known), Some(3));
        assert_eq!(superseded_by(2, Running, [(3, Superseded)]), None);
    }

    #[test]
    fn an_older_version_learned_after_a_newer_one_is_superseded_at_once() {
        assert_eq!(superseded_by(4, Running, [(6, Complete)]), Some(6));
        assert_eq!(superseded_by(4, Waiting, [(6, Complete)]), Some(6));
        assert_eq!(superseded_by(8, Running, [(6, Complete)]), None);
    }
}
