//! The health-check state machine: a pure function of the current state,
//! the consecutive pass/fail counters and one result. No tokio, no clock:
//! the checker task owns the counters and publishes only the state.

use switchyard_routing::TargetState;

/// Consecutive results, owned by one checker (`&mut`), never shared.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub passes: u32,
    pub fails: u32,
}

/// `healthy_threshold` and `unhealthy_threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub healthy: u32,
    pub unhealthy: u32,
}

/// Applies one check result.
/// - `initial`: the FIRST pass makes it healthy (fast startup);
///   `unhealthy` failures in a row make it unhealthy.
/// - `healthy`: `unhealthy` failures in a row make it unhealthy.
/// - `unhealthy`: `healthy` passes in a row make it healthy.
/// - `draining` never changes here.
pub fn next(state: TargetState, c: &mut Counters, pass: bool, t: Thresholds) -> TargetState {
    if pass {
        c.passes = c.passes.saturating_add(1);
        c.fails = 0;
    } else {
        c.fails = c.fails.saturating_add(1);
        c.passes = 0;
    }
    match state {
        TargetState::Initial if pass => TargetState::Healthy,
        TargetState::Initial | TargetState::Healthy if c.fails >= t.unhealthy => {
            TargetState::Unhealthy
        }
        TargetState::Unhealthy if c.passes >= t.healthy => TargetState::Healthy,
        s => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TargetState::*;

    const T: Thresholds = Thresholds {
        healthy: 3,
        unhealthy: 2,
    };

    /// Runs a sequence of results from `start`, returning each state.
    fn run(start: TargetState, results: &str) -> Vec<TargetState> {
        let mut c = Counters::default();
        let mut s = start;
        results
            .chars()
            .map(|r| {
                s = next(s, &mut c, r == 'P', T);
                s
            })
            .collect()
    }

    #[test]
    fn initial_becomes_healthy_on_the_first_pass() {
        assert_eq!(run(Initial, "P"), vec![Healthy]);
        // Even after a failure that did not reach the threshold.
        assert_eq!(run(Initial, "FP"), vec![Initial, Healthy]);
    }

    #[test]
    fn initial_becomes_unhealthy_after_threshold_failures() {
        assert_eq!(run(Initial, "FF"), vec![Initial, Unhealthy]);
    }

    #[test]
    fn healthy_needs_consecutive_failures() {
        assert_eq!(run(Healthy, "FPFPF"), vec![Healthy; 5]);
        assert_eq!(run(Healthy, "FF"), vec![Healthy, Unhealthy]);
    }

    #[test]
    fn unhealthy_needs_consecutive_passes() {
        assert_eq!(run(Unhealthy, "PPFPP"), vec![Unhealthy; 5]);
        assert_eq!(run(Unhealthy, "PPP"), vec![Unhealthy, Unhealthy, Healthy]);
    }

    #[test]
    fn flapping_target_never_settles_healthy() {
        // Pass, fail, pass, fail ... from unhealthy: never 3 passes in a row.
        let states = run(Unhealthy, "PFPFPFPFPF");
        assert!(states.iter().all(|s| *s == Unhealthy));
        // And a healthy one flapping never gets 2 failures in a row.
        let states = run(Healthy, "FPFPFPFP");
        assert!(states.iter().all(|s| *s == Healthy));
    }

    #[test]
    fn thresholds_of_one_flip_at_once() {
        let t = Thresholds {
            healthy: 1,
            unhealthy: 1,
        };
        let mut c = Counters::default();
        assert_eq!(next(Healthy, &mut c, false, t), Unhealthy);
        assert_eq!(next(Unhealthy, &mut c, true, t), Healthy);
    }

    #[test]
    fn draining_is_not_changed_by_checks() {
        assert_eq!(run(Draining, "PPPFFF"), vec![Draining; 6]);
    }
}
