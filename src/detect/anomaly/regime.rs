//! Operating regimes: one model per run state of the machine, so that a stop is not an
//! anomaly but stop-level current while the machine says it runs is.
//!
//! Where an `anomaly` rule names a run-state point (`regime = "running"`), the rule keeps one
//! model for "stopped" (the point is 0) and one for "running" (any other value) and feeds
//! each sample to the model of the regime the run state names. A switch ends the episode of
//! the regime left (a stop clears the alarm of a running fault; a restart with the fault
//! still present raises it again), and the first [`SETTLE_SAMPLES`] samples after a switch
//! feed no model, so start-up inrush and run-down teach nothing and alarm nothing.

/// Samples after a regime switch that no model sees (start-up and run-down transients).
pub const SETTLE_SAMPLES: u32 = 10;

/// What a model must offer to be kept per regime.
pub trait RegimeModel {
    /// Ends the current episode and forgets evidence that was building up, so the model
    /// starts its next stretch of this regime armed and without stale statistics.
    fn end_episode(&mut self);
}

/// One model per operating regime (or a single one when the rule names no run state).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Regimes<M> {
    models: Vec<M>,
    current: Option<usize>,
    settling: u32,
}

impl<M: Clone + RegimeModel> Regimes<M> {
    /// `model` for every regime: two (stopped, running) when `conditioned`, else one.
    pub fn new(model: M, conditioned: bool) -> Self {
        let models = if conditioned {
            vec![model.clone(), model]
        } else {
            vec![model]
        };
        Self {
            models,
            current: None,
            settling: 0,
        }
    }

    /// The model a sample taken with run state `running` goes to (`None` when the rule has
    /// no run state), or `None` while a switch settles.
    pub fn select(&mut self, running: Option<bool>) -> Option<&mut M> {
        let regime = usize::from(running.unwrap_or(false)).min(self.models.len() - 1);
        if self.current != Some(regime) {
            if let Some(left) = self.current.and_then(|c| self.models.get_mut(c)) {
                left.end_episode();
                self.settling = SETTLE_SAMPLES;
            }
            self.current = Some(regime);
        }
        if self.settling > 0 {
            self.settling -= 1;
            return None;
        }
        self.models.get_mut(regime)
    }

    /// The model of the current regime, if a sample has been seen.
    pub fn current(&self) -> Option<&M> {
        self.models.get(self.current?)
    }

    /// Every regime's model (stopped first when conditioned).
    pub fn models(&self) -> &[M] {
        &self.models
    }

    /// Every regime's model, to change in place (a restored snapshot's buffers).
    pub fn models_mut(&mut self) -> &mut [M] {
        &mut self.models
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Default)]
    struct Counting {
        fed: u32,
        ended: u32,
    }

    impl RegimeModel for Counting {
        fn end_episode(&mut self) {
            self.ended += 1;
        }
    }

    #[test]
    fn a_switch_ends_the_left_episode_and_settles_before_the_next_model_sees_samples() {
        let mut r = Regimes::new(Counting::default(), true);
        for _ in 0..5 {
            r.select(Some(true))
                .expect("first regime needs no settling")
                .fed += 1;
        }
        for i in 0..SETTLE_SAMPLES {
            assert!(r.select(Some(false)).is_none(), "settling sample {i}");
        }
        r.select(Some(false)).expect("settled").fed += 1;
        let [stopped, running] = r.models() else {
            panic!("two regimes");
        };
        assert_eq!((stopped.fed, stopped.ended), (1, 0));
        assert_eq!((running.fed, running.ended), (5, 1));
    }

    #[test]
    fn without_a_run_state_one_model_sees_everything() {
        let mut r = Regimes::new(Counting::default(), false);
        for running in [None, Some(true), Some(false), None] {
            r.select(running).expect("never settles").fed += 1;
        }
        assert_eq!(r.models().len(), 1);
        assert_eq!(r.models()[0].fed, 4);
    }
}
