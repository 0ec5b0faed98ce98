//! The baselines: a single relay for everybody, and one relay per branch (WSUS style), as a
//! flow-level model of the same links: every transfer is a flow along a path of links, and
//! the flows sharing a link get max-min fair rates (progressive filling), recomputed whenever
//! a flow ends or starts. A flow may wait for another to end first (a branch relay serves its
//! endpoints once it holds the whole release, as a downstream WSUS server does).
//!
//! The product is not simulated this way (it is simulated chunk by chunk, by the planner);
//! for the baselines the flow model is exact where their closed forms are, and fast at any
//! scale (a handful of rate recomputations for 25,000 endpoints).

/// One transfer.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Indices of the links it crosses.
    pub path: Vec<usize>,
    /// Bytes to move.
    pub bytes: f64,
    /// A flow that must end before this one starts.
    pub after: Option<usize>,
}

/// Runs the flows over links of the given capacities (bytes/s) and returns when each flow
/// ends (seconds; infinite for a flow that cannot progress, e.g. over a link of capacity 0).
pub fn run(capacity: &[f64], flows: &[Flow]) -> Vec<f64> {
    let n = flows.len();
    let mut done = vec![f64::INFINITY; n];
    let mut left: Vec<f64> = flows.iter().map(|f| f.bytes).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut active: Vec<usize> = Vec::new();
    for (i, f) in flows.iter().enumerate() {
        match f.after {
            Some(a) => dependents[a].push(i),
            None => active.push(i),
        }
    }
    let mut now = 0.0f64;
    // Flows of zero bytes end at once.
    let mut rate = vec![0.0f64; n];
    while !active.is_empty() {
        fair_rates(capacity, flows, &active, &mut rate);
        // Next end.
        let step = active
            .iter()
            .map(|&f| {
                if rate[f] > 0.0 {
                    left[f] / rate[f]
                } else {
                    f64::INFINITY
                }
            })
            .fold(f64::INFINITY, f64::min);
        if !step.is_finite() {
            break;
        }
        now += step;
        let mut next = Vec::with_capacity(active.len());
        for &f in &active {
            left[f] -= rate[f] * step;
            // Ends now, within rounding of the step.
            if left[f] <= flows[f].bytes * 1e-12 + 1e-9 {
                done[f] = now;
                next.extend(dependents[f].iter().copied());
            } else {
                next.push(f);
            }
        }
        active = next;
    }
    done
}

/// Max-min fair rates of the `active` flows (progressive filling): all unfrozen flows rise
/// together; when a link fills, the flows crossing it freeze at that level.
fn fair_rates(capacity: &[f64], flows: &[Flow], active: &[usize], rate: &mut [f64]) {
    let mut remaining = capacity.to_vec();
    let mut frozen = vec![false; flows.len()];
    let mut unfrozen: Vec<usize> = active.to_vec();
    let mut users = vec![0usize; capacity.len()];
    while !unfrozen.is_empty() {
        users.iter_mut().for_each(|u| *u = 0);
        for &f in &unfrozen {
            for &l in &flows[f].path {
                users[l] += 1;
            }
        }
        let level = (0..capacity.len())
            .filter(|&l| users[l] > 0)
            .map(|l| remaining[l].max(0.0) / users[l] as f64)
            .fold(f64::INFINITY, f64::min);
        if !level.is_finite() {
            // Flows that cross no link: unconstrained; they end at once.
            for &f in &unfrozen {
                rate[f] = f64::INFINITY;
            }
            return;
        }
        let full: Vec<bool> = (0..capacity.len())
            .map(|l| {
                users[l] > 0 && remaining[l].max(0.0) / users[l] as f64 <= level * (1.0 + 1e-12)
            })
            .collect();
        let mut still = Vec::with_capacity(unfrozen.len());
        for &f in &unfrozen {
            if flows[f].path.iter().any(|&l| full[l]) {
                rate[f] = level;
                frozen[f] = true;
                for &l in &flows[f].path {
                    remaining[l] -= level;
                }
            } else {
                still.push(f);
            }
        }
        unfrozen = still;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_link_splits_evenly_and_a_freed_share_goes_to_the_rest() {
        // Two flows share link 0 (10 B/s); flow 1 also crosses link 1 (2 B/s).
        let flows = [
            Flow {
                path: vec![0],
                bytes: 40.0,
                after: None,
            },
            Flow {
                path: vec![0, 1],
                bytes: 10.0,
                after: None,
            },
            Flow {
                path: vec![0],
                bytes: 8.0,
                after: Some(1),
            },
        ];
        let done = run(&[10.0, 2.0], &flows);
        // Flow 1 is held to 2 B/s by link 1: ends at 5 s; flow 0 gets 8 B/s meanwhile (40 B
        // at 5 s: ends then too). Flow 2 starts at 5 s alone: 8 B at 10 B/s.
        assert!((done[1] - 5.0).abs() < 1e-9, "{done:?}");
        assert!((done[0] - 5.0).abs() < 1e-9, "{done:?}");
        assert!((done[2] - 5.8).abs() < 1e-9, "{done:?}");
        // A link of capacity 0 never lets its flow end.
        let stuck = run(&[0.0], &flows[..1]);
        assert!(stuck[0].is_infinite());
    }
}
